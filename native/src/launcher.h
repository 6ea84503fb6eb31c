// SPDX-License-Identifier: Apache-2.0
/* launcher: forks `run` monitors on request, so the daemon does not fork itself. */
#ifndef OSVIRT_LAUNCHER_H
#define OSVIRT_LAUNCHER_H

int cmd_launcher(int argc, char **argv, char *argv0);

#endif
