/*
 * test_confine.c: opening files beneath a folder (confine.h), both ways:
 * spool__open_beneath (openat2 where the kernel has it) and the walk it
 * falls back to, called directly so it runs on any kernel. A temporary
 * tree holds a folder "in" (the root) and "out" beside it, with symlinks
 * from the one to the other.
 */
#include "io/confine.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

typedef int (*open_fn)(int root, const char *path, int flags, mode_t mode);

static char base[64];

static void path_of(char *out, size_t len, const char *rel) {
  snprintf(out, len, "%s/%s", base, rel);
}

static void make_file(const char *rel, const char *text) {
  char p[256];
  path_of(p, sizeof p, rel);
  FILE *f = fopen(p, "w");
  ASSERT(f != NULL);
  fputs(text, f);
  fclose(f);
}

static void make_link(const char *target, const char *rel) {
  char p[256];
  path_of(p, sizeof p, rel);
  ASSERT_EQ(symlink(target, p), 0);
}

static int exists(const char *rel) {
  char p[256];
  struct stat st;
  path_of(p, sizeof p, rel);
  return lstat(p, &st) == 0;
}

static int setup(void) {
  snprintf(base, sizeof base, "/tmp/spool-confine.XXXXXX");
  ASSERT(mkdtemp(base) != NULL);
  char p[256];
  path_of(p, sizeof p, "in");
  ASSERT_EQ(mkdir(p, 0777), 0);
  path_of(p, sizeof p, "in/a");
  ASSERT_EQ(mkdir(p, 0777), 0);
  path_of(p, sizeof p, "out");
  ASSERT_EQ(mkdir(p, 0777), 0);
  make_file("in/a/b.txt", "inside");
  make_file("out/secret.txt", "outside");
  char target[256];
  path_of(target, sizeof target, "out");
  make_link(target, "in/away");                  /* a folder outside */
  make_link("a", "in/inner");                    /* a folder inside */
  make_link("../out/secret.txt", "in/relative"); /* a file outside */
  path_of(target, sizeof target, "out/created.txt");
  make_link(target, "in/dangling"); /* nothing there yet */
  path_of(p, sizeof p, "in");
  int root = open(p, O_RDONLY | O_DIRECTORY);
  ASSERT(root >= 0);
  return root;
}

static void teardown(int root) {
  char cmd[128];
  close(root);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
  ASSERT_EQ(system(cmd), 0);
}

static void read_is(open_fn fn, int root, const char *path, const char *want) {
  char buf[64] = {0};
  int fd = fn(root, path, O_RDONLY, 0);
  ASSERT(fd >= 0);
  ASSERT(read(fd, buf, sizeof buf - 1) >= 0);
  close(fd);
  ASSERT_STR_EQ(buf, want);
}

static void check(open_fn fn) {
  int root = setup();
  read_is(fn, root, "a/b.txt", "inside");
  read_is(fn, root, "./a//./b.txt", "inside");
  /* No symlink is followed, inside or out, as a folder or as the file. */
  ASSERT_EQ(fn(root, "away/secret.txt", O_RDONLY, 0), -ELOOP);
  ASSERT_EQ(fn(root, "inner/b.txt", O_RDONLY, 0), -ELOOP);
  ASSERT_EQ(fn(root, "relative", O_RDONLY, 0), -ELOOP);
  ASSERT_EQ(fn(root, "../out/secret.txt", O_RDONLY, 0), -EACCES);
  ASSERT_EQ(fn(root, "a/b.txt/c", O_RDONLY, 0), -ENOTDIR);
  ASSERT_EQ(fn(root, "no/such", O_RDONLY, 0), -ENOENT);
  /* The folder itself, for listing. */
  int fd = fn(root, "", O_RDONLY | O_DIRECTORY, 0);
  ASSERT(fd >= 0);
  close(fd);
  /* Writes make the folders above, and never through a symlink. */
  int w = O_WRONLY | O_CREAT | O_TRUNC;
  fd = fn(root, "new/deeper/f.txt", w, 0666);
  ASSERT(fd >= 0);
  close(fd);
  ASSERT(exists("in/new/deeper/f.txt"));
  ASSERT_EQ(fn(root, "away/planted.txt", w, 0666), -ELOOP);
  ASSERT_EQ(fn(root, "away/new/planted.txt", w, 0666), -ELOOP);
  ASSERT_EQ(fn(root, "dangling", w, 0666), -ELOOP);
  ASSERT_EQ(fn(root, "relative", O_WRONLY | O_APPEND | O_CREAT, 0666), -ELOOP);
  ASSERT(!exists("out/planted.txt"));
  ASSERT(!exists("out/new"));
  ASSERT(!exists("out/created.txt"));
  teardown(root);
}

TEST_IMPL(confine_walk) {
  check(spool__open_walk);
}

TEST_IMPL(confine_beneath) {
  check(spool__open_beneath);
  spool__confine_force_walk(1);
  check(spool__open_beneath);
  spool__confine_force_walk(0);
}
