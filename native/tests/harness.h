// SPDX-License-Identifier: Apache-2.0
/*
 * A tiny test harness: TEST(name) defines a test, CHECK* record failures
 * with file:line and go on, main() (harness.c) runs every test and exits 1
 * when any check failed.
 */
#ifndef OSVIRT_TEST_HARNESS_H
#define OSVIRT_TEST_HARNESS_H

#include <stdio.h>
#include <string.h>

struct test {
	const char *name;
	void (*fn)(void);
};

void test_register(const struct test *t);
void test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define TEST(name)                                                     \
	static void test_##name(void);                                 \
	__attribute__((constructor)) static void register_##name(void) \
	{                                                              \
		static const struct test t = {#name, test_##name};     \
		test_register(&t);                                     \
	}                                                              \
	static void test_##name(void)

#define CHECK(cond)                                                 \
	do {                                                        \
		if (!(cond))                                        \
			test_fail(__FILE__, __LINE__, "%s", #cond); \
	} while (0)

#define CHECK_INT(got, want)                                                                  \
	do {                                                                                  \
		long long g_ = (long long)(got), w_ = (long long)(want);                      \
		if (g_ != w_)                                                                 \
			test_fail(__FILE__, __LINE__, "%s is %lld, want %lld", #got, g_, w_); \
	} while (0)

#define CHECK_STR(got, want)                                                                                      \
	do {                                                                                                      \
		const char *g_ = (got), *w_ = (want);                                                             \
		if (!g_ || strcmp(g_, w_))                                                                        \
			test_fail(__FILE__, __LINE__, "%s is \"%s\", want \"%s\"", #got, g_ ? g_ : "(null)", w_); \
	} while (0)

#endif
