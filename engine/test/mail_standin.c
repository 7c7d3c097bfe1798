/*
 * mail_standin.c: a minimal SMTP and IMAP server for the email channel's
 * tests, speaking as much of each protocol as libcurl uses, on 127.0.0.1.
 *
 *   mail_standin DIR PORTFILE
 *
 * writes "<smtp port> <imap port>\n" to PORTFILE once both listen. Mail
 * sent over SMTP lands in DIR/sent/<n>.eml (with DIR/sent/<n>.env holding
 * "from <addr>\nto <addr>\n..." and "auth <user>" when it logged in); the
 * IMAP INBOX serves DIR/inbox/<uid>.eml, and a fetched message is renamed
 * <uid>.seen, so UID SEARCH UNSEEN finds it no more. A message with a
 * line over 998 characters is refused, as real servers refuse it (RFC
 * 5321 4.5.3.1.6). A thread per connection, blocking I/O: it serves a
 * test, not the world. It runs until killed.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *dir;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int sent_count;

static int listen_on(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0)
    return -1;
  socklen_t len = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &len);
  *port = ntohs(a.sin_port);
  return fd;
}

/* Reads a line without its CRLF; 0 at the end of the connection. */
static int get_line(FILE *in, char *buf, size_t size) {
  if (fgets(buf, (int)size, in) == NULL)
    return 0;
  buf[strcspn(buf, "\r\n")] = '\0';
  return 1;
}

/* ---- SMTP ---- */

static void *smtp_session(void *arg) {
  int fd = (int)(intptr_t)arg;
  FILE *in = fdopen(fd, "r"), *out = fdopen(dup(fd), "w");
  char line[4096], env[8192] = "";
  fprintf(out, "220 standin ESMTP\r\n");
  fflush(out);
  while (get_line(in, line, sizeof line)) {
    if (strncasecmp(line, "EHLO", 4) == 0 ||
        strncasecmp(line, "HELO", 4) == 0) {
      fprintf(out, "250-standin\r\n250 AUTH PLAIN\r\n");
    } else if (strncasecmp(line, "AUTH PLAIN", 10) == 0) {
      /* The credentials are base64 of "\0user\0pass", given on the line
       * or after a 334 continuation; kept as given. */
      const char *creds = line + 10;
      while (*creds == ' ')
        creds++;
      char more[1024];
      if (*creds == '\0') {
        fprintf(out, "334 \r\n");
        fflush(out);
        if (!get_line(in, more, sizeof more))
          break;
        creds = more;
      }
      snprintf(env + strlen(env), sizeof env - strlen(env), "auth %s\n", creds);
      fprintf(out, "235 2.7.0 accepted\r\n");
    } else if (strncasecmp(line, "MAIL FROM:", 10) == 0) {
      snprintf(env + strlen(env), sizeof env - strlen(env), "from %s\n",
               line + 10);
      fprintf(out, "250 OK\r\n");
    } else if (strncasecmp(line, "RCPT TO:", 8) == 0) {
      snprintf(env + strlen(env), sizeof env - strlen(env), "to %s\n",
               line + 8);
      fprintf(out, "250 OK\r\n");
    } else if (strcasecmp(line, "DATA") == 0) {
      fprintf(out, "354 end with <CRLF>.<CRLF>\r\n");
      fflush(out);
      pthread_mutex_lock(&lock);
      int n = ++sent_count;
      pthread_mutex_unlock(&lock);
      char path[4096];
      snprintf(path, sizeof path, "%s/sent/%d.tmp", dir, n);
      FILE *f = fopen(path, "w");
      char *data = NULL;
      size_t cap = 0;
      ssize_t n_read;
      int too_long = 0;
      while ((n_read = getline(&data, &cap, in)) > 0) {
        data[strcspn(data, "\r\n")] = '\0';
        if (strcmp(data, ".") == 0)
          break;
        if (strlen(data) > 998)
          too_long = 1;
        fprintf(f, "%s\r\n", data[0] == '.' ? data + 1 : data);
      }
      free(data);
      fclose(f);
      if (too_long) {
        unlink(path);
        fprintf(out, "500 5.5.2 line too long (over 998 characters)\r\n");
        fflush(out);
        env[0] = '\0';
        continue;
      }
      char final[4096];
      snprintf(final, sizeof final, "%s/sent/%d.env", dir, n);
      f = fopen(final, "w");
      fputs(env, f);
      fclose(f);
      env[0] = '\0';
      snprintf(final, sizeof final, "%s/sent/%d.eml", dir, n);
      rename(path, final); /* whole, or not there */
      fprintf(out, "250 OK queued as %d\r\n", n);
    } else if (strcasecmp(line, "QUIT") == 0) {
      fprintf(out, "221 bye\r\n");
      break;
    } else if (strcasecmp(line, "RSET") == 0 || strcasecmp(line, "NOOP") == 0) {
      fprintf(out, "250 OK\r\n");
    } else {
      fprintf(out, "502 not implemented\r\n");
    }
    fflush(out);
  }
  fflush(out);
  fclose(out);
  fclose(in);
  return NULL;
}

/* ---- IMAP ---- */

static int unseen(int *uids, int max) {
  char path[4096];
  snprintf(path, sizeof path, "%s/inbox", dir);
  DIR *d = opendir(path);
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL && n < max) {
    int uid;
    char ext[8];
    if (sscanf(e->d_name, "%d.%7s", &uid, ext) == 2 && strcmp(ext, "eml") == 0)
      uids[n++] = uid;
  }
  if (d)
    closedir(d);
  return n;
}

static void fetch(FILE *out, const char *tag, int uid) {
  char path[4096], seen[4096];
  snprintf(path, sizeof path, "%s/inbox/%d.eml", dir, uid);
  snprintf(seen, sizeof seen, "%s/inbox/%d.seen", dir, uid);
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    f = fopen(seen, "rb");
  if (f == NULL) {
    fprintf(out, "%s OK FETCH done (no such message)\r\n", tag);
    return;
  }
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  rewind(f);
  char *body = malloc((size_t)size);
  size_t got = fread(body, 1, (size_t)size, f);
  fclose(f);
  fprintf(out, "* 1 FETCH (UID %d BODY[] {%zu}\r\n", uid, got);
  fwrite(body, 1, got, out);
  fprintf(out, ")\r\n%s OK FETCH done\r\n", tag);
  free(body);
  rename(path, seen); /* BODY[] sets \Seen */
}

static void *imap_session(void *arg) {
  int fd = (int)(intptr_t)arg;
  FILE *in = fdopen(fd, "r"), *out = fdopen(dup(fd), "w");
  char line[4096], tag[64], cmd[4096];
  fprintf(out, "* OK [CAPABILITY IMAP4rev1] standin ready\r\n");
  fflush(out);
  while (get_line(in, line, sizeof line)) {
    if (sscanf(line, "%63s %4095[^\n]", tag, cmd) != 2) {
      fprintf(out, "* BAD what?\r\n");
    } else if (strcasecmp(cmd, "CAPABILITY") == 0) {
      fprintf(out, "* CAPABILITY IMAP4rev1\r\n%s OK done\r\n", tag);
    } else if (strncasecmp(cmd, "LOGIN ", 6) == 0) {
      fprintf(out, "%s OK logged in\r\n", tag);
    } else if (strncasecmp(cmd, "SELECT", 6) == 0 ||
               strncasecmp(cmd, "EXAMINE", 7) == 0) {
      int uids[1024];
      fprintf(out,
              "* %d EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\n%s OK [READ-WRITE] "
              "done\r\n",
              unseen(uids, 1024), tag);
    } else if (strncasecmp(cmd, "UID SEARCH", 10) == 0 ||
               strncasecmp(cmd, "SEARCH", 6) == 0) {
      int uids[1024], n = unseen(uids, 1024);
      fprintf(out, "* SEARCH");
      for (int i = 0; i < n; i++)
        fprintf(out, " %d", uids[i]);
      fprintf(out, "\r\n%s OK SEARCH done\r\n", tag);
    } else if (strncasecmp(cmd, "UID FETCH ", 10) == 0) {
      fetch(out, tag, atoi(cmd + 10));
    } else if (strncasecmp(cmd, "FETCH ", 6) == 0) {
      fetch(out, tag, atoi(cmd + 6));
    } else if (strcasecmp(cmd, "LOGOUT") == 0) {
      fprintf(out, "* BYE\r\n%s OK bye\r\n", tag);
      break;
    } else if (strcasecmp(cmd, "NOOP") == 0 ||
               strncasecmp(cmd, "CLOSE", 5) == 0) {
      fprintf(out, "%s OK done\r\n", tag);
    } else {
      fprintf(out, "%s BAD not implemented\r\n", tag);
    }
    fflush(out);
  }
  fflush(out);
  fclose(out);
  fclose(in);
  return NULL;
}

typedef struct listener {
  int fd;
  void *(*session)(void *);
} listener;

static void *accept_loop(void *arg) {
  listener *l = arg;
  for (;;) {
    int c = accept(l->fd, NULL, NULL);
    if (c < 0)
      continue;
    pthread_t t;
    pthread_create(&t, NULL, l->session, (void *)(intptr_t)c);
    pthread_detach(t);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: mail_standin DIR PORTFILE\n");
    return 2;
  }
  dir = argv[1];
  char path[4096];
  snprintf(path, sizeof path, "%s/sent", dir);
  mkdir(path, 0755);
  snprintf(path, sizeof path, "%s/inbox", dir);
  mkdir(path, 0755);
  static listener smtp, imap;
  int smtp_port, imap_port;
  smtp.fd = listen_on(&smtp_port);
  imap.fd = listen_on(&imap_port);
  if (smtp.fd < 0 || imap.fd < 0) {
    perror("listen");
    return 1;
  }
  smtp.session = smtp_session;
  imap.session = imap_session;
  pthread_t t;
  pthread_create(&t, NULL, accept_loop, &smtp);
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", argv[2]);
  FILE *f = fopen(tmp, "w");
  fprintf(f, "%d %d\n", smtp_port, imap_port);
  fclose(f);
  rename(tmp, argv[2]);
  accept_loop(&imap);
  return 0;
}
