/*
 * l_bytecode.c: spool's own Lua library loads from chunks precompiled at
 * build time (luac), when they are there and not older than their source.
 * Parsing the library's ~35 modules was over half of a short `spool run`
 * (start-up, W4 in bench/agents-bench).
 *
 * A package searcher placed before Lua's own: for module a.b it looks for
 * BYTECODE/a/b.luac (or a/b/init.luac) beside LUA/a/b.lua (or
 * a/b/init.lua), and answers nil when there is none or the source is newer
 * (an edit not yet built), so Lua's searcher reads the source as before.
 * Agents never come this way: the loader reads them itself.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "spool_int.h"

/* The path of module `name` under dir, dots made slashes, with suffix
 * (".lua", "/init.lua" ...); 0, or -1 if it does not fit. */
static int module_path(char *out, size_t size, const char *dir,
                       const char *name, const char *suffix) {
  int n = snprintf(out, size, "%s/%s%s", dir, name, suffix);
  if (n < 0 || (size_t)n >= size)
    return -1;
  char *p = out + strlen(dir) + 1;
  for (size_t i = 0; name[i]; i++)
    if (p[i] == '.')
      p[i] = '/';
  return 0;
}

/* The chunk for `name` if a current one is built: the loader and its
 * path, else nothing (a string saying why, as searchers do). */
static int search(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const char *src_dir = lua_tostring(L, lua_upvalueindex(1));
  const char *bc_dir = lua_tostring(L, lua_upvalueindex(2));
  static const char *const forms[][2] = {{".luac", ".lua"},
                                         {"/init.luac", "/init.lua"}};
  for (int i = 0; i < 2; i++) {
    char bc[4096], src[4096];
    struct stat sb, ss;
    if (module_path(bc, sizeof bc, bc_dir, name, forms[i][0]) != 0 ||
        module_path(src, sizeof src, src_dir, name, forms[i][1]) != 0 ||
        stat(bc, &sb) != 0 || stat(src, &ss) != 0)
      continue;
    if (sb.st_mtim.tv_sec < ss.st_mtim.tv_sec ||
        (sb.st_mtim.tv_sec == ss.st_mtim.tv_sec &&
         sb.st_mtim.tv_nsec < ss.st_mtim.tv_nsec))
      continue; /* edited since the build: the source it is */
    if (luaL_loadfilex(L, bc, "b") != LUA_OK)
      return luaL_error(L, "error loading module '%s' from '%s':\n\t%s", name,
                        bc, lua_tostring(L, -1));
    lua_pushstring(L, src);
    return 2;
  }
  lua_pushfstring(L, "no precompiled '%s' in %s", name, bc_dir);
  return 1;
}

void spool__add_bytecode_searcher(lua_State *L, const char *lua_dir,
                                  const char *bytecode_dir) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchers");
  int searchers = lua_gettop(L);
  lua_Integer n = luaL_len(L, searchers);
  for (lua_Integer i = n; i >= 2; i--) { /* make room at 2 */
    lua_geti(L, searchers, i);
    lua_seti(L, searchers, i + 1);
  }
  lua_pushstring(L, lua_dir);
  lua_pushstring(L, bytecode_dir);
  lua_pushcclosure(L, search, 2);
  lua_seti(L, searchers, 2);
  lua_pop(L, 2);
}
