/*
 * runner.c: runs one C test by name (ctest registers each one), or all of
 * them in order with no argument.
 */
#include <stdio.h>
#include <string.h>

#define TEST_ENTRY(name) void run_test_##name(void);
#include "test_list.h"
#undef TEST_ENTRY

static const struct {
  const char *name;
  void (*fn)(void);
} tests[] = {
#define TEST_ENTRY(name) {#name, run_test_##name},
#include "test_list.h"
#undef TEST_ENTRY
};

int main(int argc, char **argv) {
  size_t n = sizeof tests / sizeof tests[0];
  int ran = 0;
  for (size_t i = 0; i < n; i++) {
    if (argc > 1 && strcmp(argv[1], tests[i].name) != 0)
      continue;
    printf("test %s\n", tests[i].name);
    fflush(stdout);
    tests[i].fn();
    ran++;
  }
  if (ran == 0) {
    fprintf(stderr, "no test named '%s'\n", argc > 1 ? argv[1] : "");
    return 1;
  }
  printf("ok %d test%s\n", ran, ran == 1 ? "" : "s");
  return 0;
}
