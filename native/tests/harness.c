// SPDX-License-Identifier: Apache-2.0
#include "harness.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>

static const struct test *tests[256];
static size_t ntests;
static int failures;
static const char *current;

void test_register(const struct test *t)
{
	if (ntests == sizeof tests / sizeof tests[0]) {
		fputs("harness: too many tests\n", stderr);
		exit(2);
	}
	tests[ntests++] = t;
}

void test_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "FAIL %s (%s:%d): ", current, file, line);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	failures++;
}

/* `prog [NAME...]`: every test, or those named. */
int main(int argc, char **argv)
{
	size_t ran = 0;
	for (size_t i = 0; i < ntests; i++) {
		bool wanted = argc < 2;
		for (int a = 1; a < argc; a++)
			wanted |= !strcmp(argv[a], tests[i]->name);
		if (!wanted)
			continue;
		current = tests[i]->name;
		int before = failures;
		tests[i]->fn();
		ran++;
		if (failures == before && getenv("VERBOSE"))
			printf("ok   %s\n", current);
	}
	printf("%s: %zu tests, %d failed checks\n", argv[0], ran, failures);
	return failures ? 1 : 0;
}
