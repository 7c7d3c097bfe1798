/*
 * l_fs.c: files of the project, read and written on the uv thread pool so
 * the loop never waits on the disk.
 *
 *   read_file(path)              -> contents | nil, "ENOENT: ..."
 *   write_file(path, data, mode) -> true | nil, err    mode "w" or "a"
 *                                   (missing folders are created)
 *   list_dir(path)               -> { name, ... } | nil, err
 *
 * A path is relative to the project folder and cannot leave it: an
 * absolute path, a ".." part or a NUL byte is a caller's bug (raised), and
 * the file is opened beneath the project folder without following any
 * symbolic link (confine.c), so a link planted in the project cannot lead
 * out of it (ELOOP). Only regular files are read or written: a FIFO or a
 * device would hold a pool thread. Which project files an agent may touch
 * is spool.fs's business (lua/spool/fs.lua), not this file's.
 *
 * The library (never an agent: agents reach files only through spool.fs,
 * which never passes it) may pass `true` after the path to read or list
 * any absolute path, as the agent loader does for agents_dir.
 *
 * Files larger than 64 MiB are refused rather than read.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/confine.h"
#include "spool_int.h"

#define MAX_FILE (64u << 20)

enum { READ, WRITE, LIST };

typedef struct fs_op {
  spool__op op;
  uv_work_t work;
  spool__task *t;
  int cancelled;
  int what;
  int append;      /* for writes */
  int not_regular; /* the path is a FIFO, a device, a socket */
  char *root;      /* the project folder; NULL when path is absolute */
  char *path;      /* as the caller gave it, which is what messages show */
  char *data;      /* what to write, what was read, or the names listed
                      (NUL-terminated each) */
  size_t len;
  int err; /* errno, or EFBIG */
} fs_op;

static void fs_free(fs_op *f) {
  free(f->root);
  free(f->path);
  free(f->data);
  free(f);
}

/* Opens f's path: beneath the project folder, or (the library's own
 * reads) as given. Returns a descriptor or a negative errno. */
static int open_path(fs_op *f, int flags, mode_t mode) {
  if (f->root == NULL) {
    int fd = open(f->path, flags | O_CLOEXEC, mode);
    return fd >= 0 ? fd : -errno;
  }
  int root = open(f->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root < 0)
    return -errno;
  int fd = spool__open_beneath(root, f->path, flags, mode);
  close(root);
  return fd;
}

static void do_list(fs_op *f) {
  int fd = open_path(f, O_RDONLY | O_DIRECTORY, 0);
  DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
  if (d == NULL) {
    f->err = fd >= 0 ? errno : -fd;
    if (fd >= 0)
      close(fd);
    return;
  }
  spool__buf names = {0};
  struct dirent *ent;
  while ((ent = readdir(d)) != NULL) {
    if (ent->d_name[0] == '.')
      continue; /* ., .., and the hidden files editors leave */
    if (spool__buf_add(&names, ent->d_name, strlen(ent->d_name) + 1) != 0) {
      f->err = ENOMEM;
      break;
    }
  }
  closedir(d);
  f->data = names.data;
  f->len = names.len;
}

/* Opens a regular file for do_read or do_write: O_NONBLOCK so a FIFO
 * cannot hold the thread in open(2), and anything but a regular file is
 * refused. Returns a descriptor or -1 with f->err set. */
static int open_regular(fs_op *f, int flags, mode_t mode) {
  int fd = open_path(f, flags | O_NONBLOCK, mode);
  if (fd < 0) {
    f->err = -fd;
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0)
    f->err = errno;
  else if (S_ISDIR(st.st_mode))
    f->err = EISDIR;
  else if (!S_ISREG(st.st_mode))
    f->err = EINVAL, f->not_regular = 1;
  if (f->err) {
    close(fd);
    return -1;
  }
  return fd;
}

static void do_write(fs_op *f) {
  int fd =
      open_regular(f, O_WRONLY | O_CREAT | (f->append ? O_APPEND : 0), 0666);
  if (fd < 0)
    return;
  if (!f->append && ftruncate(fd, 0) != 0)
    f->err = errno;
  for (size_t off = 0; f->err == 0 && off < f->len;) {
    ssize_t n = write(fd, f->data + off, f->len - off);
    if (n < 0 && errno != EINTR)
      f->err = errno;
    else if (n > 0)
      off += (size_t)n;
  }
  if (close(fd) != 0 && f->err == 0)
    f->err = errno;
}

static void do_read(fs_op *f) {
  int fd = open_regular(f, O_RDONLY, 0);
  if (fd < 0)
    return;
  size_t cap = 0;
  for (;;) {
    if (f->len == cap) {
      if (cap >= MAX_FILE) {
        f->err = EFBIG;
        break;
      }
      cap = cap ? cap * 2 : 8192;
      char *p = realloc(f->data, cap);
      if (p == NULL) {
        f->err = ENOMEM;
        break;
      }
      f->data = p;
    }
    ssize_t n = read(fd, f->data + f->len, cap - f->len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      f->err = errno;
    if (n <= 0)
      break;
    f->len += (size_t)n;
  }
  close(fd);
}

/* Runs on a pool thread: plain blocking I/O, no Lua, no uv handles. */
static void do_io(uv_work_t *w) {
  fs_op *f = w->data;
  if (f->what == LIST)
    do_list(f);
  else if (f->what == WRITE)
    do_write(f);
  else
    do_read(f);
}

/* stack: fs_op -> result(s) */
static int push_result(lua_State *L) {
  fs_op *f = lua_touserdata(L, 1);
  if (f->err) {
    if (f->err == EFBIG)
      return spool__push_fail(L, "EFBIG: %s is larger than %d MiB", f->path,
                              MAX_FILE >> 20);
    if (f->err == ELOOP && f->root)
      return spool__push_fail(
          L, "ELOOP: %s: spool.fs does not follow symbolic links", f->path);
    if (f->not_regular)
      return spool__push_fail(L, "EINVAL: %s: not a regular file", f->path);
    return spool__push_fail(L, "%s: %s: %s",
                            uv_err_name(uv_translate_sys_error(f->err)),
                            f->path, strerror(f->err));
  }
  if (f->what == WRITE) {
    lua_pushboolean(L, 1);
  } else if (f->what == LIST) {
    lua_newtable(L);
    int i = 0;
    for (size_t off = 0; off < f->len; off += strlen(f->data + off) + 1) {
      lua_pushstring(L, f->data + off);
      lua_rawseti(L, -2, ++i);
    }
  } else {
    lua_pushlstring(L, f->data ? f->data : "", f->len);
  }
  return 1;
}

static void after_io(uv_work_t *w, int status) {
  fs_op *f = w->data;
  (void)status;
  if (f->cancelled) {
    fs_free(f);
    return;
  }
  spool__task_wake_with(f->t, push_result, f);
  fs_free(f);
}

static void fs_cancel(spool__op *op) {
  fs_op *f = (fs_op *)op;
  f->cancelled = 1;
  /* If the work has not started, after_io runs with UV_ECANCELED; if it
   * has, after_io runs when it ends. Either way it frees f. */
  uv_cancel((uv_req_t *)&f->work);
}

/* Raises unless path is a relative path inside the project: that is a
 * caller's bug, and says nothing about what is on disk. */
static void check_path(lua_State *L, const char *path, size_t len) {
  if (strlen(path) != len)
    luaL_error(L, "path '%s' holds a NUL byte", path);
  if (path[0] == '\0' || path[0] == '/')
    luaL_error(L, "path '%s' must be relative to the project folder", path);
  for (const char *p = path; *p;) {
    const char *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n == 2 && p[0] == '.' && p[1] == '.')
      luaL_error(L, "path '%s' leaves the project folder", path);
    p += n + (slash ? 1 : 0);
  }
}

static int start(lua_State *L, int what) {
  spool_engine *e = lua_touserdata(L, lua_upvalueindex(1));
  size_t plen;
  const char *path = luaL_checklstring(L, 1, &plen);
  size_t len = 0;
  int write = what == WRITE;
  const char *data = write ? luaL_checklstring(L, 2, &len) : NULL;
  static const char *const modes[] = {"w", "a", NULL};
  int append = write ? luaL_checkoption(L, 3, "w", modes) : 0;
  int anywhere = !write && lua_toboolean(L, 2);
  spool__task *t =
      spool__task_check(L, write ? "spool.fs.write" : "spool.fs.read");
  if (!anywhere)
    check_path(L, path, plen);
  fs_op *f = calloc(1, sizeof *f);
  if (f == NULL)
    return luaL_error(L, "out of memory");
  f->op.cancel = fs_cancel;
  f->t = t;
  f->what = what;
  f->append = append;
  f->path = strdup(path);
  f->root = anywhere ? NULL : strdup(e->project_abs);
  f->data = write ? malloc(len ? len : 1) : NULL;
  if (f->path == NULL || (!anywhere && f->root == NULL) ||
      (write && f->data == NULL)) {
    fs_free(f);
    return luaL_error(L, "out of memory");
  }
  if (write) {
    memcpy(f->data, data, len);
    f->len = len;
  }
  f->work.data = f;
  int rc = uv_queue_work(e->loop, &f->work, do_io, after_io);
  if (rc != 0) {
    fs_free(f);
    return spool__push_fail(L, "EIO: %s", uv_strerror(rc));
  }
  return spool__task_wait(L, t, &f->op);
}

static int l_fs_read(lua_State *L) {
  return start(L, READ);
}

static int l_fs_write(lua_State *L) {
  return start(L, WRITE);
}

static int l_fs_list(lua_State *L) {
  return start(L, LIST);
}

void spool__open_fs(lua_State *L) {
  /* A test knob: resolve paths by the walk even where openat2 works, so
   * the specs run both ways (spec/fs_spec.lua). Either way is as strict. */
  const char *walk = getenv("SPOOL_TEST_FS_WALK");
  if (walk && strcmp(walk, "1") == 0)
    spool__confine_force_walk(1);
  lua_pushlightuserdata(L, spool__engine_of(L));
  lua_pushcclosure(L, l_fs_read, 1);
  lua_setfield(L, -2, "read_file");
  lua_pushlightuserdata(L, spool__engine_of(L));
  lua_pushcclosure(L, l_fs_write, 1);
  lua_setfield(L, -2, "write_file");
  lua_pushlightuserdata(L, spool__engine_of(L));
  lua_pushcclosure(L, l_fs_list, 1);
  lua_setfield(L, -2, "list_dir");
}
