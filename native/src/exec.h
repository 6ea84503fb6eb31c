// SPDX-License-Identifier: Apache-2.0
/* exec: run a process inside a running container. */
#ifndef OSVIRT_EXEC_H
#define OSVIRT_EXEC_H

int cmd_exec(int argc, char **argv);

#endif
