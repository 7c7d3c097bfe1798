/*
 * confine.c: files beneath a folder, never through a symbolic link (see
 * confine.h). The kernel does the work where it can (openat2 with
 * RESOLVE_BENEATH); elsewhere each part is opened by itself with
 * O_NOFOLLOW, which is as strict, only slower. Blocking calls: the thread
 * pool's, never the loop's.
 */
#include "io/confine.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__linux__)
#include <sys/syscall.h>
#if defined(SYS_openat2)
#include <linux/openat2.h>
#define HAVE_OPENAT2 1
#endif
#endif

/* Set once openat2 turned out to be missing (an old kernel, or a seccomp
 * filter that answers ENOSYS or EPERM): every later call walks. Pool
 * threads share it, hence the atomics. */
static int no_openat2;
static int force_walk;

void spool__confine_force_walk(int on) {
  __atomic_store_n(&force_walk, on, __ATOMIC_RELAXED);
}

/* The next part of *p (skipping slashes and "." parts) into part; returns
 * its length, 0 at the end, or -ENAMETOOLONG / -EACCES (a ".." part). */
static int next_part(const char **p, char part[NAME_MAX + 1]) {
  for (;;) {
    while (**p == '/')
      (*p)++;
    const char *start = *p;
    while (**p && **p != '/')
      (*p)++;
    size_t n = (size_t)(*p - start);
    if (n == 0)
      return 0;
    if (n == 1 && start[0] == '.')
      continue;
    if (n == 2 && start[0] == '.' && start[1] == '.')
      return -EACCES;
    if (n > NAME_MAX)
      return -ENAMETOOLONG;
    memcpy(part, start, n);
    part[n] = '\0';
    return (int)n;
  }
}

int spool__open_walk(int root, const char *path, int flags, mode_t mode) {
  char part[NAME_MAX + 1], next[NAME_MAX + 1];
  const char *p = path;
  int dir = root; /* ours to close once it is not root */
  int n = next_part(&p, part);
  if (n < 0)
    return n;
  if (n == 0) /* the folder itself */
    return openat(root, ".", (flags & ~O_CREAT) | O_CLOEXEC);
  for (;;) {
    const char *after = p;
    int m = next_part(&after, next);
    if (m < 0) {
      n = m;
      break;
    }
    if (m == 0) { /* part is the last one */
      int fd = openat(dir, part, flags | O_NOFOLLOW | O_CLOEXEC, mode);
      n = fd >= 0 ? fd : -errno;
      break;
    }
    /* A folder on the way. O_NOFOLLOW makes a symlink fail with ELOOP;
     * not O_PATH, which would open the link itself. */
    int dflags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    int fd = openat(dir, part, dflags);
    if (fd < 0 && errno == ENOENT && (flags & O_CREAT)) {
      /* mkdirat never follows a symlink in its last part either: a
       * dangling link there fails with EEXIST, and the open then with
       * ELOOP. */
      if (mkdirat(dir, part, 0777) != 0 && errno != EEXIST) {
        n = -errno;
        break;
      }
      fd = openat(dir, part, dflags);
    }
    if (fd < 0) {
      n = -errno;
      /* O_DIRECTORY answers ENOTDIR for a symlink: say what it is. */
      struct stat st;
      if (n == -ENOTDIR && fstatat(dir, part, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          S_ISLNK(st.st_mode))
        n = -ELOOP;
      break;
    }
    if (dir != root)
      close(dir);
    dir = fd;
    memcpy(part, next, (size_t)m + 1);
    p = after;
  }
  if (dir != root)
    close(dir);
  return n;
}

int spool__open_beneath(int root, const char *path, int flags, mode_t mode) {
#ifdef HAVE_OPENAT2
  /* With O_CREAT the folders above may be missing, and making them is the
   * walk's job. */
  if (!(flags & O_CREAT) && !__atomic_load_n(&force_walk, __ATOMIC_RELAXED) &&
      !__atomic_load_n(&no_openat2, __ATOMIC_RELAXED)) {
    char part[NAME_MAX + 1];
    const char *p = path;
    int n;
    while ((n = next_part(&p, part)) > 0)
      ; /* the same refusals as the walk, before the kernel sees it */
    if (n < 0)
      return n;
    struct open_how how = {
        .flags = (unsigned long long)(flags | O_CLOEXEC),
        .mode = 0,
        .resolve =
            RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    const char *rel = path;
    while (*rel == '/')
      rel++;
    long fd = syscall(SYS_openat2, root, *rel ? rel : ".", &how, sizeof how);
    if (fd >= 0)
      return (int)fd;
    if (errno != ENOSYS && errno != EPERM && errno != E2BIG)
      return errno == EXDEV ? -ELOOP : -errno;
    /* An EPERM could be the file's own answer: then the walk gets it too,
     * and walking from now on is only slower. */
    __atomic_store_n(&no_openat2, 1, __ATOMIC_RELAXED);
  }
#endif
  return spool__open_walk(root, path, flags, mode);
}
