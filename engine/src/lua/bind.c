/*
 * bind.c: what the bindings (l_*.c) share, kept apart from l_core.c, which
 * registers them all: userdata classes, hex strings, failures.
 */
#include <stdarg.h>
#include <string.h>

#include "base/errors.h"
#include "spool_int.h"

void spool__class(lua_State *L, const char *name, const luaL_Reg *methods,
                  lua_CFunction gc, lua_CFunction close) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  if (gc) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
  }
  if (close) {
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
  }
}

void spool__push_hex(lua_State *L, const unsigned char *p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, 2 * n);
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  luaL_pushresultsize(&b, 2 * n);
}

int spool__push_fail(lua_State *L, const char *fmt, ...) {
  va_list ap;
  lua_pushnil(L);
  va_start(ap, fmt);
  const char *msg = lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  size_t n = spool__error_name_len(msg);
  if (n > 0)
    lua_pushlstring(L, msg, n);
  else
    lua_pushliteral(L, "EINTERNAL"); /* a message without its name: a bug */
  return 3;
}
