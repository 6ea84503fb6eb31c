// SPDX-License-Identifier: Apache-2.0
/* Command-line scanning: options take "--name VALUE" or "--name=VALUE". */
#ifndef OSVIRT_ARGS_H
#define OSVIRT_ARGS_H

#include <stdbool.h>

#include "error.h"

struct args {
	int argc;
	char **argv;
	int i;
};

/* argv[i] is exactly name. */
bool flag(struct args *a, const char *name);
/* The value of option name at argv[i] (consuming the next argument for "--name VALUE"), or NULL. */
const char *value(struct args *a, const char *name);
/* After the options: "--" and a non-empty command. */
char **parse_command(struct args *a);

/* Decimal (parse_ulong) or C-style base (parse_num) unsigned numbers; what names the option in the error. */
int parse_ulong(const char *s, const char *what, unsigned long *out, struct error *e);
int parse_num(const char *s, const char *what, unsigned long *out, struct error *e);
/* The same for the command line: a bad number is a usage error. */
unsigned long arg_ulong(const char *s, const char *what);

#endif
