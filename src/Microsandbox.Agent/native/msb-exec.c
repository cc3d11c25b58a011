/*
 * msb-exec: starts every sandbox command. The agent starts this helper as root with the command's
 * environment and its streams (pipes, or nothing when a terminal is given); the helper does what
 * .NET's process start cannot, in this order: it enters the command's cgroup, so that everything
 * the command ever starts stays in it however it forks; it starts a new session, so the command
 * leads its own process group; it takes the terminal, if any, as controlling terminal and as
 * stdin, stdout and stderr; it becomes the user, enters the working directory as that user, and
 * runs the program. Linked statically, so it runs in any sandbox root, with or without a C library.
 *
 * usage: msb-exec <terminal-path|-> <cgroup-dir|-> <status-fd> <directory> <uid> <gid> <groups>
 *                 <program> [argument...]
 * <groups> lists the supplementary group ids, comma-separated, or is "-" for none. The user is
 * taken after the cgroup and the terminal, which only root may enter or give to any user.
 * When the command cannot start, "<step> <errno>" (step: user, directory, exec) goes to the
 * status descriptor, which closes unwritten when the program runs, and the exit code is 126
 * (cannot run it), 127 (not found) or 125 (no terminal).
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

static int status_fd = -1;

static void report(const char *step, int error)
{
    if (status_fd >= 0) {
        dprintf(status_fd, "%s %d", step, error);
    }
}

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
        return -1;
    }

    return 0;
}

/* Writing 0 to cgroup.procs moves the writer. A failure leaves the command in the agent's
 * cgroup: it still runs, and the agent falls back to its process group and /proc to find it. */
static void enter_cgroup(const char *dir)
{
    char path[512];
    if (snprintf(path, sizeof path, "%s/cgroup.procs", dir) >= (int)sizeof path) {
        return;
    }

    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (write(fd, "0", 1) < 0) {
            fprintf(stderr, "msb-exec: %s: %s\n", path, strerror(errno));
        }

        close(fd);
    }
}

static int take_terminal(const char *path)
{
    int terminal = open(path, O_RDWR);
    if (terminal < 0 || ioctl(terminal, TIOCSCTTY, 0) < 0) {
        fprintf(stderr, "msb-exec: %s: %s\n", path, strerror(errno));
        return -1;
    }

    for (int fd = 0; fd <= 2; fd++) {
        if (dup2(terminal, fd) < 0) {
            return -1;
        }
    }

    if (terminal > 2) {
        close(terminal);
    }

    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 9) {
        fprintf(stderr, "usage: msb-exec <terminal-path|-> <cgroup-dir|-> <status-fd> <directory> "
                        "<uid> <gid> <groups> <program> [argument...]\n");
        return 125;
    }

    status_fd = atoi(argv[3]);
    if (fcntl(status_fd, F_SETFD, FD_CLOEXEC) < 0) {
        status_fd = -1;
    }

    if (strcmp(argv[2], "-") != 0) {
        enter_cgroup(argv[2]);
    }

    if (setsid() < 0) {
        fprintf(stderr, "msb-exec: setsid: %s\n", strerror(errno));
        return 125;
    }

    if (strcmp(argv[1], "-") != 0 && take_terminal(argv[1]) < 0) {
        return 125;
    }

    if (become(argv[5], argv[6], argv[7]) < 0) {
        report("user", errno);
        return 126;
    }

    if (chdir(argv[4]) < 0) {
        report("directory", errno);
        return 126;
    }

    execvp(argv[8], &argv[8]);
    int error = errno;
    report("exec", error);
    return error == ENOENT ? 127 : 126;
}
