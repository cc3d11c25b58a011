/*
 * msb-exec: starts a sandbox command on a terminal. The agent allocates the pseudo-terminal and
 * starts this helper with the command's user, environment and working directory already set; the
 * helper does what .NET's process start cannot: a new session, the terminal as its controlling
 * terminal and as stdin, stdout and stderr, and then exec of the command. Linked statically, so
 * it runs in any sandbox root, with or without a C library.
 *
 * usage: msb-exec <terminal-path> <uid> <gid> <groups> <program> [argument...]
 * <groups> lists the supplementary group ids, comma-separated, or is "-" for none. The user is
 * taken last, after the terminal is open, so any user can be given the terminal the agent owns.
 * Exit codes when the command never starts: 126 (cannot run it), 127 (not found), 125 (terminal).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define MAX_GROUPS 64

static int become(const char *uid_text, const char *gid_text, char *groups_text)
{
    gid_t groups[MAX_GROUPS];
    size_t count = 0;
    if (strcmp(groups_text, "-") != 0) {
        for (char *item = strtok(groups_text, ","); item != NULL && count < MAX_GROUPS;
             item = strtok(NULL, ",")) {
            groups[count++] = (gid_t)strtoul(item, NULL, 10);
        }
    }

    uid_t uid = (uid_t)strtoul(uid_text, NULL, 10);
    gid_t gid = (gid_t)strtoul(gid_text, NULL, 10);
    if (setgroups(count, groups) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
        fprintf(stderr, "msb-exec: cannot become %s:%s: %s\r\n", uid_text, gid_text, strerror(errno));
        return -1;
    }

    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: msb-exec <terminal-path> <uid> <gid> <groups> <program> [argument...]\n");
        return 125;
    }

    if (setsid() < 0) {
        fprintf(stderr, "msb-exec: setsid: %s\n", strerror(errno));
        return 125;
    }

    int terminal = open(argv[1], O_RDWR);
    if (terminal < 0 || ioctl(terminal, TIOCSCTTY, 0) < 0) {
        fprintf(stderr, "msb-exec: %s: %s\n", argv[1], strerror(errno));
        return 125;
    }

    for (int fd = 0; fd <= 2; fd++) {
        if (dup2(terminal, fd) < 0) {
            return 125;
        }
    }

    if (terminal > 2) {
        close(terminal);
    }

    if (become(argv[2], argv[3], argv[4]) < 0) {
        return 126;
    }

    execvp(argv[5], &argv[5]);
    int error = errno;
    fprintf(stderr, "msb-exec: %s: %s\r\n", argv[5], strerror(error));
    return error == ENOENT ? 127 : 126;
}
