// SPDX-License-Identifier: Apache-2.0
/* A jail's pid 1 (see init.c). */
#ifndef OSVIRT_INIT_H
#define OSVIRT_INIT_H

/* Why `init` with argc further arguments may not run here (a usage error), or NULL. */
const char *init_refusal(int argc);
/* Reaps, and returns once nothing else is left (0) or on a failure (1). */
int init_run(void);

#endif
