/* What the kernel's TCP hash walk costs a sock_diag dump, by the states asked for (docs/benchmarks.md,
 * "System families of issue 17"). Each request is timed with CLOCK_THREAD_CPUTIME_ID (the kernel's
 * work is the calling thread's system time), cold (12 ms apart) and hot (back to back).
 *   cc -O2 -o /tmp/sock_diag_walk bench/sock_diag_walk.c && /tmp/sock_diag_walk [requests, 200]
 * States are bits of idiag_states: 1 << TCP_LISTEN (10) alone walks only the listening hash;
 * any other state walks the whole established hash; 1 << 13 (TCP_BOUND_INACTIVE, Linux 6.10+)
 * adds a walk of the bind hash. */
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double cpu_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static char buf[1 << 16];

/* One legacy TCPDIAG_GETSOCK dump (both IP versions in one walk); returns the sockets seen. */
static int dump(int fd, unsigned states, unsigned seq) {
  struct {
    struct nlmsghdr h;
    struct inet_diag_req r;
  } req;
  memset(&req, 0, sizeof req);
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = TCPDIAG_GETSOCK;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.h.nlmsg_seq = seq;
  req.r.idiag_family = AF_INET;
  req.r.idiag_states = states;
  struct sockaddr_nl to = {.nl_family = AF_NETLINK};
  if (sendto(fd, &req, sizeof req, 0, (struct sockaddr *)&to, sizeof to) < 0) {
    perror("sendto");
    exit(1);
  }
  int n = 0;
  for (;;) {
    int len = recv(fd, buf, sizeof buf, 0);
    if (len <= 0) {
      perror("recv");
      exit(1);
    }
    for (struct nlmsghdr *h = (void *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type == NLMSG_DONE) return n;
      if (h->nlmsg_type == NLMSG_ERROR) {
        fprintf(stderr, "netlink error\n");
        exit(1);
      }
      n++;
    }
  }
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 200;
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) {
    perror("socket");
    return 1;
  }
  struct {
    const char *what;
    unsigned states;
  } cases[] = {
      {"no state (no walk)", 0},
      {"LISTEN only (listening hash)", 1u << 10},
      {"ESTABLISHED only (established hash)", 1u << 1},
      {"states 0-12 (what SOCKET asks)", 0x1fff},
      {"every bit (incl. bound-inactive)", ~0u},
  };
  unsigned seq = 0;
  printf("%-40s %12s %12s %8s\n", "states asked for", "cold us", "hot us", "sockets");
  for (unsigned c = 0; c < sizeof cases / sizeof *cases; c++) {
    double cold = 0, t0;
    int socks = 0;
    for (int i = 0; i < n; i++) {
      usleep(12000);
      t0 = cpu_us();
      socks = dump(fd, cases[c].states, ++seq);
      cold += cpu_us() - t0;
    }
    t0 = cpu_us();
    for (int i = 0; i < n; i++) dump(fd, cases[c].states, ++seq);
    double hot = cpu_us() - t0;
    printf("%-40s %12.1f %12.1f %8d\n", cases[c].what, cold / n, hot / n, socks);
  }
  return 0;
}
