// SPDX-License-Identifier: Apache-2.0
/*
 * osvirt-init: a jail's pid 1, linked statically because it runs inside a
 * root that may have no libc (the jail driver binds it to /dev/.osvirt-init).
 * Called as `osvirt-init init`, the way `osvirt-helper init` is; it links
 * only init.c, not the helper.
 */
#include <string.h>
#include <unistd.h>

#include "init.h"

static int refuse(const char *why)
{
	const char *parts[] = {"osvirt-init: ", why, "\nusage: osvirt-init init   (as pid 1 of a pid namespace)\n"};
	for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
		(void)!write(STDERR_FILENO, parts[i], strlen(parts[i]));
	return 2;
}

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "init"))
		return refuse("expected the subcommand 'init'");
	const char *why = init_refusal(argc - 2);
	if (why)
		return refuse(why);
	return init_run();
}
