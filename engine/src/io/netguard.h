/*
 * netguard.h: which addresses agents' HTTP may connect to. A model can
 * steer a tool's URL, so agents' requests refuse the machine's own and
 * private endpoints — loopback (the engine's control API), unspecified,
 * link-local and the clouds' metadata services — unless the project
 * allows them with rules. No Lua, no curl: addresses in, verdicts out.
 *
 * A rule is an address or a CIDR block with an optional port:
 *
 *   "127.0.0.1"  "127.0.0.1:9000"  "10.0.0.0/8"  "10.0.0.0/8:443"
 *   "::1"  "fe80::/10"  "[::1]"  "[::1]:9000"  "[fd00::/8]:443"
 *
 * (an IPv6 address takes a port only in brackets). An IPv4 rule covers
 * the same address written as IPv6 (::ffff:a.b.c.d) too.
 */
#ifndef SPOOL_NETGUARD_H
#define SPOOL_NETGUARD_H

#include <stddef.h>

typedef struct spool__net_rule {
  unsigned char addr[16]; /* IPv6; IPv4 as ::ffff:a.b.c.d */
  int bits;               /* the prefix, over all 128 bits */
  int port;               /* 0: any port */
} spool__net_rule;

/* Parses a rule; 0, or -1 when text is not one. */
int spool__net_rule_parse(const char *text, spool__net_rule *out);

/*
 * Whether a connection to ip (text, as the resolver or curl gives it) and
 * port, made from local_ip (NULL if unknown), may go ahead: NULL if so, else
 * what the address is ("a loopback address"), with out (if not NULL) holding
 * the sentence an agent is told:
 *
 *   resolves to 127.0.0.1, a loopback address; agents may not reach it
 *   unless spool.lua allows it (http = { allow = { "127.0.0.1:8080" } })
 *
 * An address that does not parse is refused.
 */
const char *spool__net_check(const spool__net_rule *allow, size_t n,
                             const char *ip, const char *local_ip, int port,
                             char *out, size_t outlen);

#endif
