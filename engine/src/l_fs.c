/*
 * l_fs.c: files of the project, read and written on the uv thread pool so
 * the loop never waits on the disk. Paths are relative to the project
 * folder and may not leave it (no absolute paths, no ".." parts).
 *
 *   read_file(path)              -> contents | nil, "ENOENT: ..."
 *   write_file(path, data, mode) -> true | nil, err    mode "w" or "a"
 *                                   (missing folders are created)
 *   list_dir(path)               -> { name, ... } | nil, err
 *
 * The library (never an agent: agents reach files only through spool.fs)
 * may pass `true` after the path to read or list any absolute path, as the
 * agent loader does for agents_dir.
 *
 * Files larger than 64 MiB are refused rather than read.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "spool_int.h"

#define MAX_FILE (64u << 20)

typedef struct fs_op {
  spool__op op;
  uv_work_t work;
  spool__task *t;
  int cancelled;
  int append; /* for writes */
  int write;
  int list;   /* list a folder: data holds the names, NUL-terminated each */
  char *path; /* absolute */
  size_t root_len; /* the project folder's part of path */
  char *data;      /* what to write, or what was read */
  size_t len;
  int err; /* errno, or EFBIG */
} fs_op;

static void fs_free(fs_op *f) {
  free(f->path);
  free(f->data);
  free(f);
}

/* Creates the folders above path, like mkdir -p; errors surface when the
 * file itself is opened. */
static void make_parents(char *path, size_t root_len) {
  for (char *p = path + root_len; (p = strchr(p, '/')) != NULL; p++) {
    *p = '\0';
    mkdir(path, 0777);
    *p = '/';
  }
}

static void do_list(fs_op *f) {
  DIR *d = opendir(f->path);
  if (d == NULL) {
    f->err = errno;
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

/* Runs on a pool thread: plain blocking I/O, no Lua, no uv handles. */
static void do_io(uv_work_t *w) {
  fs_op *f = w->data;
  if (f->list) {
    do_list(f);
    return;
  }
  if (f->write) {
    make_parents(f->path, f->root_len);
    FILE *fp = fopen(f->path, f->append ? "ab" : "wb");
    if (fp == NULL) {
      f->err = errno;
      return;
    }
    if (fwrite(f->data, 1, f->len, fp) != f->len)
      f->err = errno ? errno : EIO;
    if (fclose(fp) != 0 && f->err == 0)
      f->err = errno;
    return;
  }
  FILE *fp = fopen(f->path, "rb");
  if (fp == NULL) {
    f->err = errno;
    return;
  }
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
    size_t n = fread(f->data + f->len, 1, cap - f->len, fp);
    f->len += n;
    if (n == 0) {
      if (ferror(fp))
        f->err = errno ? errno : EIO;
      break;
    }
  }
  fclose(fp);
}

/* stack: fs_op -> result(s) */
static int push_result(lua_State *L) {
  fs_op *f = lua_touserdata(L, 1);
  if (f->err) {
    lua_pushnil(L);
    if (f->err == EFBIG)
      lua_pushfstring(L, "EFBIG: %s is larger than %d MiB",
                      f->path + f->root_len, MAX_FILE >> 20);
    else
      lua_pushfstring(L, "%s: %s: %s",
                      uv_err_name(uv_translate_sys_error(f->err)),
                      f->path + f->root_len, strerror(f->err));
    return 2;
  }
  if (f->write) {
    lua_pushboolean(L, 1);
  } else if (f->list) {
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

/* Checks that path stays inside the project, and returns it joined to the
 * project folder (malloc'd). Raises on a bad path: that is a caller bug. */
static char *project_path(lua_State *L, spool_engine *e, const char *path) {
  if (path[0] == '\0' || path[0] == '/')
    luaL_error(L, "path '%s' must be relative to the project folder", path);
  for (const char *p = path; *p;) {
    const char *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n == 2 && p[0] == '.' && p[1] == '.')
      luaL_error(L, "path '%s' leaves the project folder", path);
    p += n + (slash ? 1 : 0);
  }
  size_t need = strlen(e->project_abs) + strlen(path) + 2;
  char *full = malloc(need);
  if (full == NULL) {
    luaL_error(L, "out of memory");
    return NULL;
  }
  snprintf(full, need, "%s/%s", e->project_abs, path);
  return full;
}

enum { READ, WRITE, LIST };

static int start(lua_State *L, int what) {
  spool_engine *e = lua_touserdata(L, lua_upvalueindex(1));
  const char *path = luaL_checkstring(L, 1);
  size_t len = 0;
  int write = what == WRITE;
  const char *data = write ? luaL_checklstring(L, 2, &len) : NULL;
  static const char *const modes[] = {"w", "a", NULL};
  int append = write ? luaL_checkoption(L, 3, "w", modes) : 0;
  int anywhere = !write && lua_toboolean(L, 2);
  spool__task *t =
      spool__task_check(L, write ? "spool.fs.write" : "spool.fs.read");
  /* project_path raises before allocating */
  char *full = anywhere ? strdup(path) : project_path(L, e, path);
  if (full == NULL)
    return luaL_error(L, "out of memory");
  fs_op *f = calloc(1, sizeof *f);
  if (f == NULL) {
    free(full);
    return luaL_error(L, "out of memory");
  }
  f->path = full;
  /* Messages name project files as the caller did: relative. */
  f->root_len = anywhere ? 0 : strlen(e->project_abs) + 1;
  f->op.cancel = fs_cancel;
  f->t = t;
  f->write = write;
  f->list = what == LIST;
  f->append = append;
  if (write) {
    f->data = malloc(len ? len : 1);
    if (f->data == NULL) {
      fs_free(f);
      return luaL_error(L, "out of memory");
    }
    memcpy(f->data, data, len);
    f->len = len;
  }
  f->work.data = f;
  int rc = uv_queue_work(e->loop, &f->work, do_io, after_io);
  if (rc != 0) {
    fs_free(f);
    lua_pushnil(L);
    lua_pushfstring(L, "EIO: %s", uv_strerror(rc));
    return 2;
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
