/*
 * confine.h: opening a file beneath a folder so that no path an agent (or a
 * model steering it) writes can lead out of it. No Lua, no uv: plain
 * blocking calls, for the thread pool.
 *
 * A path here is relative and '/'-separated; empty and "." parts are
 * skipped, and a ".." part is refused (callers refuse it earlier, with a
 * better message). No symbolic link is ever followed, wherever it points:
 * one inside the folder could still lead to a file the caller refuses by
 * name, and both ways of resolving below must agree.
 */
#ifndef SPOOL_CONFINE_H
#define SPOOL_CONFINE_H

#include <sys/types.h>

/*
 * Opens `path` beneath the folder `root` (an open descriptor) with the
 * open(2) `flags` and `mode`, never following a symbolic link. With
 * O_CREAT the missing folders above the file are made first, like
 * mkdir -p, through the same walk. Returns a descriptor (O_CLOEXEC), or a
 * negative errno: ELOOP when a part of the path is a symbolic link.
 *
 * It uses openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) where the kernel
 * has it, else (ENOSYS, or EPERM from a seccomp filter) the walk below.
 */
int spool__open_beneath(int root, const char *path, int flags, mode_t mode);

/*
 * The same, one part at a time: openat(O_NOFOLLOW | O_DIRECTORY) for each
 * folder (mkdirat first for a missing one, with O_CREAT) and O_NOFOLLOW on
 * the last part. What spool__open_beneath falls back to; exposed so tests
 * can run it on any kernel.
 */
int spool__open_walk(int root, const char *path, int flags, mode_t mode);

/* Makes spool__open_beneath always walk (tests; SPOOL_TEST_FS_WALK=1). */
void spool__confine_force_walk(int on);

#endif
