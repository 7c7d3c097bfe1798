/*
 * test_netguard.c: which addresses agents' HTTP may reach (netguard.h):
 * every refused kind in each of its spellings, the public addresses that
 * pass, and the allow rules' syntax. No network: addresses are text.
 */
#include "io/netguard.h"
#include "test.h"

static const char *why(const char *ip, int port) {
  return spool__net_check(NULL, 0, ip, NULL, port, NULL, 0);
}

TEST_IMPL(netguard_refuses) {
  static const struct {
    const char *ip, *why;
  } cases[] = {
      {"127.0.0.1", "a loopback address"},
      {"127.255.0.9", "a loopback address"},
      {"::1", "a loopback address"},
      {"::ffff:127.0.0.1", "a loopback address"},
      {"::ffff:7f00:1", "a loopback address"},
      {"0:0:0:0:0:ffff:127.0.0.1", "a loopback address"},
      {"::127.0.0.1", "a loopback address"},        /* IPv4-compatible */
      {"64:ff9b::127.0.0.1", "a loopback address"}, /* NAT64 */
      {"0.0.0.0", "an unspecified address"},
      {"0.1.2.3", "an unspecified address"},
      {"::", "an unspecified address"},
      {"::ffff:0.0.0.0", "an unspecified address"},
      {"169.254.169.254", "a cloud metadata address"},
      {"::ffff:169.254.169.254", "a cloud metadata address"},
      {"fd00:ec2::254", "a cloud metadata address"},
      {"100.100.100.200", "a cloud metadata address"},
      {"168.63.129.16", "a cloud metadata address"},
      {"169.254.170.2", "a link-local address"},
      {"169.254.0.1", "a link-local address"},
      {"fe80::1", "a link-local address"},
      {"febf::1", "a link-local address"},
      {"not an address", "not an address"},
      {"", "not an address"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *got = why(cases[i].ip, 80);
    if (got == NULL || strcmp(got, cases[i].why) != 0)
      fprintf(stderr, "%s: %s\n", cases[i].ip, got ? got : "(allowed)");
    ASSERT_STR_EQ(got, cases[i].why);
  }
  ASSERT_STR_EQ(why(NULL, 80), "not an address");
}

TEST_IMPL(netguard_passes_the_rest) {
  static const char *const ok[] = {
      "93.184.216.34",  "8.8.8.8",   "10.0.0.1",        "192.168.1.1",
      "172.16.0.1",     "128.0.0.1", "169.253.255.255", "169.255.0.1",
      "2606:4700::1",   "fec0::1",   "fd00:ec2::253",   "2001:db8::1",
      "::ffff:8.8.8.8", "1.0.0.0",
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    const char *got = why(ok[i], 443);
    if (got)
      fprintf(stderr, "%s: %s\n", ok[i], got);
    ASSERT(got == NULL);
  }
}

/* A connection from an address to itself stays on this machine, on
 * whatever interface: refused like loopback, unless a rule allows it. */
TEST_IMPL(netguard_refuses_this_machine) {
  ASSERT(spool__net_check(NULL, 0, "192.0.2.2", "192.0.2.2", 80, NULL, 0) !=
         NULL);
  ASSERT(spool__net_check(NULL, 0, "2001:db8::7", "2001:db8::7", 80, NULL, 0) !=
         NULL);
  ASSERT(spool__net_check(NULL, 0, "192.0.2.2", "192.0.2.9", 80, NULL, 0) ==
         NULL);
  spool__net_rule r;
  ASSERT_EQ(0, spool__net_rule_parse("192.0.2.2:80", &r));
  ASSERT(spool__net_check(&r, 1, "192.0.2.2", "192.0.2.2", 80, NULL, 0) ==
         NULL);
}

TEST_IMPL(netguard_rules) {
  spool__net_rule r[8];
  ASSERT_EQ(spool__net_rule_parse("127.0.0.1:9000", &r[0]), 0);
  ASSERT_EQ(spool__net_rule_parse("10.0.0.0/8", &r[1]), 0);
  ASSERT_EQ(spool__net_rule_parse("[::1]", &r[2]), 0);
  ASSERT_EQ(spool__net_rule_parse("169.254.0.0/16:8080", &r[3]), 0);
  ASSERT_EQ(spool__net_rule_parse("fe80::/10", &r[4]), 0);
  ASSERT_EQ(spool__net_rule_parse("[fd00:ec2::254/128]:80", &r[5]), 0);
  /* an address with its port */
  ASSERT(spool__net_check(r, 6, "127.0.0.1", NULL, 9000, NULL, 0) == NULL);
  ASSERT(spool__net_check(r, 6, "::ffff:127.0.0.1", NULL, 9000, NULL, 0) ==
         NULL);
  ASSERT(spool__net_check(r, 6, "127.0.0.1", NULL, 9001, NULL, 0) != NULL);
  ASSERT(spool__net_check(r, 6, "127.0.0.2", NULL, 9000, NULL, 0) != NULL);
  /* any port */
  ASSERT(spool__net_check(r, 6, "::1", NULL, 1, NULL, 0) == NULL);
  ASSERT(spool__net_check(r, 6, "::1", NULL, 65535, NULL, 0) == NULL);
  /* blocks */
  ASSERT(spool__net_check(r, 6, "169.254.1.2", NULL, 8080, NULL, 0) == NULL);
  ASSERT(spool__net_check(r, 6, "169.254.169.254", NULL, 8080, NULL, 0) ==
         NULL);
  ASSERT(spool__net_check(r, 6, "169.254.1.2", NULL, 80, NULL, 0) != NULL);
  ASSERT(spool__net_check(r, 6, "fe80::abcd", NULL, 80, NULL, 0) == NULL);
  ASSERT(spool__net_check(r, 6, "fd00:ec2::254", NULL, 80, NULL, 0) == NULL);
  ASSERT(spool__net_check(r, 6, "fd00:ec2::254", NULL, 443, NULL, 0) != NULL);
  /* a block's host bits are dropped: 127.1.2.3/8 is 127.0.0.0/8 */
  ASSERT_EQ(spool__net_rule_parse("127.1.2.3/8", &r[0]), 0);
  ASSERT(spool__net_check(r, 1, "127.200.0.1", NULL, 80, NULL, 0) == NULL);
  /* an IPv4 rule covers the mapped form; a mapped rule the IPv4 one */
  ASSERT_EQ(spool__net_rule_parse("[::ffff:127.0.0.1]:80", &r[0]), 0);
  ASSERT(spool__net_check(r, 1, "127.0.0.1", NULL, 80, NULL, 0) == NULL);
  /* what is not a rule */
  static const char *const bad[] = {
      "",
      "localhost",
      "localhost:80",
      "127.0.0.1:",
      "127.0.0.1:0",
      "127.0.0.1:65536",
      "127.0.0.1:80x",
      "10.0.0.0/33",
      "10.0.0.0/",
      "::1:80x",
      "[::1",
      "[::1]80",
      "::1/129",
      "127.1",
      "1.2.3.4/8/8",
      "[127.0.0.1]x",
      "*",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (spool__net_rule_parse(bad[i], &r[0]) == 0)
      fprintf(stderr, "'%s' parsed\n", bad[i]);
    ASSERT_EQ(spool__net_rule_parse(bad[i], &r[0]), -1);
  }
}

TEST_IMPL(netguard_explains) {
  char out[400];
  ASSERT_STR_EQ(
      spool__net_check(NULL, 0, "127.0.0.1", NULL, 8080, out, sizeof out),
      "a loopback address");
  ASSERT_STR_EQ(out, "resolves to 127.0.0.1, a loopback address; agents may "
                     "not reach it unless spool.lua allows it (http = { "
                     "allow = { \"127.0.0.1:8080\" } })");
  spool__net_check(NULL, 0, "::ffff:169.254.169.254", NULL, 80, out,
                   sizeof out);
  ASSERT_STR_EQ(out, "resolves to ::ffff:169.254.169.254, a cloud metadata "
                     "address; agents may not reach it unless spool.lua "
                     "allows it (http = { allow = { \"169.254.169.254:80\" "
                     "} })");
  spool__net_check(NULL, 0, "fe80::1", NULL, 443, out, sizeof out);
  ASSERT_CONTAINS(out, "{ \"[fe80::1]:443\" }");
  /* the suggested rule does allow it */
  spool__net_rule r;
  ASSERT_EQ(spool__net_rule_parse("[fe80::1]:443", &r), 0);
  ASSERT(spool__net_check(&r, 1, "fe80::1", NULL, 443, NULL, 0) == NULL);
}
