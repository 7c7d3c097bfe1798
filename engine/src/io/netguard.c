/*
 * netguard.c: the addresses agents' HTTP may not reach unless allowed (see
 * netguard.h). Every address is kept as 16 bytes, IPv4 as IPv4-mapped
 * IPv6, so one comparison serves both families and a mapped address is
 * judged as the IPv4 address it is.
 */
#include "io/netguard.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static const unsigned char MAPPED[12] = {0, 0, 0, 0, 0,    0,
                                         0, 0, 0, 0, 0xff, 0xff};
/* The well-known NAT64 prefix (RFC 6052): a gateway forwards
 * 64:ff9b::a.b.c.d to a.b.c.d. */
static const unsigned char NAT64[12] = {0, 0x64, 0xff, 0x9b};
static const unsigned char ZERO[16];

static int parse_addr(const char *s, unsigned char out[16], int *is4) {
  struct in_addr a4;
  struct in6_addr a6;
  if (inet_pton(AF_INET, s, &a4) == 1) {
    memcpy(out, MAPPED, 12);
    memcpy(out + 12, &a4, 4);
    *is4 = 1;
    return 0;
  }
  if (inet_pton(AF_INET6, s, &a6) == 1) {
    memcpy(out, &a6, 16);
    *is4 = 0;
    return 0;
  }
  return -1;
}

/* The IPv4 address an IPv6 one stands for, if any, written into out as
 * mapped: ::ffff:a.b.c.d, 64:ff9b::a.b.c.d, and the old IPv4-compatible
 * ::a.b.c.d (but :: and ::1, which are IPv6's own). */
static int embedded_v4(const unsigned char a[16], unsigned char out[16]) {
  int compat = memcmp(a, ZERO, 12) == 0 &&
               !(a[12] == 0 && a[13] == 0 && a[14] == 0 && a[15] <= 1);
  if (memcmp(a, MAPPED, 12) != 0 && memcmp(a, NAT64, 12) != 0 && !compat)
    return 0;
  memcpy(out, MAPPED, 12);
  memcpy(out + 12, a + 12, 4);
  return 1;
}

/* What a (mapped IPv4 or IPv6) address is, or NULL for one agents may
 * reach. */
static const char *classify(const unsigned char a[16]) {
  if (memcmp(a, MAPPED, 12) == 0) {
    const unsigned char *v = a + 12;
    if (v[0] == 127)
      return "a loopback address";
    if (v[0] == 0) /* 0.0.0.0 connects to this machine on Linux */
      return "an unspecified address";
    if (v[0] == 169 && v[1] == 254 && v[2] == 169 && v[3] == 254)
      return "a cloud metadata address"; /* AWS, GCP, Azure, OCI, ... */
    if (v[0] == 169 && v[1] == 254)
      return "a link-local address"; /* and ECS's 169.254.170.2 */
    if (v[0] == 100 && v[1] == 100 && v[2] == 100 && v[3] == 200)
      return "a cloud metadata address"; /* Alibaba Cloud */
    if (v[0] == 168 && v[1] == 63 && v[2] == 129 && v[3] == 16)
      return "a cloud metadata address"; /* Azure's host endpoint */
    return NULL;
  }
  static const unsigned char LOOP6[16] = {[15] = 1};
  static const unsigned char EC2[16] = {0xfd, 0x00,        0x0e,
                                        0xc2, [15] = 0x54, [14] = 0x02};
  if (memcmp(a, ZERO, 16) == 0)
    return "an unspecified address";
  if (memcmp(a, LOOP6, 16) == 0)
    return "a loopback address";
  if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
    return "a link-local address";
  if (memcmp(a, EC2, 16) == 0)
    return "a cloud metadata address"; /* AWS over IPv6 */
  return NULL;
}

static int matches(const spool__net_rule *r, const unsigned char a[16],
                   int port) {
  if (r->port && r->port != port)
    return 0;
  int full = r->bits / 8, rest = r->bits % 8;
  if (memcmp(r->addr, a, (size_t)full) != 0)
    return 0;
  if (rest == 0)
    return 1;
  unsigned char mask = (unsigned char)(0xff << (8 - rest));
  return (r->addr[full] & mask) == (a[full] & mask);
}

/* A decimal number of at most `digits` digits, whole of [s, end); -1 if
 * not one. */
static long number(const char *s, const char *end, int digits) {
  if (s == end || end - s > digits)
    return -1;
  long v = 0;
  for (; s < end; s++) {
    if (*s < '0' || *s > '9')
      return -1;
    v = v * 10 + (*s - '0');
  }
  return v;
}

int spool__net_rule_parse(const char *text, spool__net_rule *out) {
  const char *host = text, *host_end, *port = NULL;
  if (text[0] == '[') {
    host = text + 1;
    host_end = strchr(host, ']');
    if (host_end == NULL)
      return -1;
    if (host_end[1] == ':')
      port = host_end + 2;
    else if (host_end[1] != '\0')
      return -1;
  } else {
    const char *colon = strchr(text, ':');
    if (colon && strchr(colon + 1, ':') == NULL) { /* IPv4 with a port */
      host_end = colon;
      port = colon + 1;
    } else {
      host_end = text + strlen(text);
    }
  }
  char buf[64];
  size_t len = (size_t)(host_end - host);
  if (len == 0 || len >= sizeof buf)
    return -1;
  memcpy(buf, host, len);
  buf[len] = '\0';
  long bits = -1;
  char *slash = strchr(buf, '/');
  if (slash) {
    *slash = '\0';
    if ((bits = number(slash + 1, buf + len, 3)) < 0)
      return -1;
  }
  int is4;
  spool__net_rule r = {{0}, 0, 0};
  if (parse_addr(buf, r.addr, &is4) != 0)
    return -1;
  int max = is4 ? 32 : 128;
  if (bits > max)
    return -1;
  r.bits = (int)(bits < 0 ? max : bits) + (is4 ? 96 : 0);
  for (int i = r.bits; i < 128; i++) /* "10.1.2.3/8" means 10.0.0.0/8 */
    r.addr[i / 8] &= (unsigned char)~(0x80 >> (i % 8));
  if (port) {
    long p = number(port, port + strlen(port), 5);
    if (p < 1 || p > 65535)
      return -1;
    r.port = (int)p;
  }
  *out = r;
  return 0;
}

const char *spool__net_check(const spool__net_rule *allow, size_t n,
                             const char *ip, const char *local_ip, int port,
                             char *out, size_t outlen) {
  unsigned char raw[16], v4[16], local[16];
  int is4, local4;
  const char *why;
  if (ip == NULL || parse_addr(ip, raw, &is4) != 0) {
    why = "not an address";
  } else {
    int embeds = embedded_v4(raw, v4);
    why = classify(embeds ? v4 : raw);
    /* A connection whose two ends are one address stays on this machine,
     * whatever interface the address is on: a service listening on all
     * of them (0.0.0.0) is as near as one on loopback. */
    if (why == NULL && local_ip && parse_addr(local_ip, local, &local4) == 0 &&
        memcmp(local, raw, 16) == 0)
      why = "an address of this machine";
    for (size_t i = 0; why && i < n; i++)
      if (matches(&allow[i], raw, port) ||
          (embeds && matches(&allow[i], v4, port)))
        why = NULL;
  }
  if (why == NULL || out == NULL)
    return why;
  /* The rule that would allow it: IPv4 as such, IPv6 in brackets. */
  char rule[INET6_ADDRSTRLEN + 16] = "";
  char text[INET6_ADDRSTRLEN] = "";
  if (ip && parse_addr(ip, raw, &is4) == 0) {
    if (memcmp(raw, MAPPED, 12) == 0) {
      inet_ntop(AF_INET, raw + 12, text, sizeof text);
      snprintf(rule, sizeof rule, "%s:%d", text, port);
    } else {
      inet_ntop(AF_INET6, raw, text, sizeof text);
      snprintf(rule, sizeof rule, "[%s]:%d", text, port);
    }
  }
  snprintf(out, outlen,
           "resolves to %s, %s; agents may not reach it unless spool.lua "
           "allows it (http = { allow = { \"%s\" } })",
           ip ? ip : "?", why, rule);
  return why;
}
