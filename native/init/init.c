// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "init.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * A jail's pid 1 (FreeBSD jails have no init; this stands in for the kernel's
 * bookkeeping of a jail's processes). It reaps orphans and exits, ending the
 * pid namespace, once no other process is left, unless the jail persists.
 * It starts out persisting, so the jail exists while it is being set up;
 * signals sent from outside the pid namespace control it (signals from inside
 * are ignored, as a jailed process cannot change its jail's parameters):
 *   SIGUSR1  clear persist: exit as soon as nothing else runs
 *   SIGUSR2  set persist again
 *   SIGTERM, SIGINT  sent on to every process of the jail; exit once they are gone
 *   others   sent on to every process of the jail
 * kill(-1, 0) from pid 1 reaches exactly the other processes of its pid
 * namespace, those that entered it from outside included, so no /proc scan is
 * needed. It has no dependency but libc and no stdio, so the static
 * osvirt-init (init/main.c) that runs it in a root without a libc stays small.
 */
const char *init_refusal(int argc)
{
	if (argc != 0)
		return "init takes no arguments";
	if (getpid() != 1)
		return "init must be pid 1 of a pid namespace";
	return NULL;
}

int init_run(void)
{
	sigset_t set;
	sigfillset(&set);
	sigdelset(&set, SIGSEGV);
	sigdelset(&set, SIGBUS);
	sigdelset(&set, SIGILL);
	sigdelset(&set, SIGFPE);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0) {
		const char *parts[] = {"osvirt init: signalfd: ", strerror(errno), "\n"};
		for (size_t i = 0; i < 3; i++)
			(void)!write(STDERR_FILENO, parts[i], strlen(parts[i]));
		return 1;
	}
	bool persist = true, stopping = false;
	for (;;) {
		struct pollfd pf = {.fd = sfd, .events = POLLIN};
		/* Processes that entered from outside send no SIGCHLD here when they end: look again now and then. */
		if (poll(&pf, 1, persist && !stopping ? -1 : 100) < 0 && errno != EINTR)
			return 1;
		struct signalfd_siginfo si;
		while (read(sfd, &si, sizeof si) == sizeof si) {
			int sig = (int)si.ssi_signo;
			bool outside = si.ssi_pid == 0 && (si.ssi_code == SI_USER || si.ssi_code == SI_QUEUE);
			if (sig == SIGCHLD || !outside)
				continue;
			if (sig == SIGUSR1)
				persist = false;
			else if (sig == SIGUSR2)
				persist = true;
			else {
				kill(-1, sig);
				if (sig == SIGTERM || sig == SIGINT)
					stopping = true;
			}
		}
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		if ((!persist || stopping) && kill(-1, 0) < 0 && errno == ESRCH)
			return 0;
	}
}
