/*
 * relay/server/_datapath.c: the relay's packet loop in C, for routes the core has approved.
 *
 * The sans-IO core (relay/turn/core.py) stays the only place that decides whether a packet
 * may be relayed. When it relays a ChannelData frame or a Send indication from a UDP client,
 * or a peer's datagram to a channel, the shell (relay/server/datapath.py) records the route
 * in a Python dict with a deadline: the earliest of the allocation's, the permission's and
 * the channel binding's expiry at that moment. This module only replays such routes: it reads
 * a burst of datagrams with recvmmsg(2), forwards every one that matches a live route with
 * sendmmsg(2), and hands everything else back to Python, which runs the full path (and may
 * learn a new route). A route is never more permissive than the core: lifetimes only grow
 * (Refresh, CreatePermission, ChannelBind), and deletions drop the routes (forget_relay).
 *
 * Keys (bytes; ports and channel numbers in network order, as on the wire):
 *   channel route: client IP (4|16) + client port (2) + channel number (2)
 *   send route:    client IP (4|16) + client port (2) + XOR-PEER-ADDRESS value (8, IPv4)
 *   peer route:    peer IP (4|16) + peer port (2)
 * Values (tuples):
 *   channel/send route: (relay socket fd, peer sockaddr bytes, deadline)
 *   peer route:         (listener socket fd, client sockaddr bytes, deadline, channel number)
 * Deadlines are time.time() seconds (CLOCK_REALTIME), as the core uses.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64                 /* datagrams per recvmmsg(2) */
#define RECV_SIZE 65536          /* as socket.recvfrom(65536) in the pure Python path */
#define HEADROOM 4               /* a ChannelData header is written in front of a peer datagram */
#define SLOT (RECV_SIZE + 64)    /* one datagram's buffer, headroom included */
#define CHANNEL_MIN 0x4000       /* RFC 8656 §12 */
#define SEND_INDICATION 0x0016   /* RFC 8656 §11.2: Send method, indication class */
#define MAGIC_COOKIE 0x2112A442u /* RFC 8489 §5 */
#define MAX_SEND_IGNORED 8

typedef struct {
    PyObject_HEAD
    unsigned char *buf; /* BATCH slots of SLOT bytes */
    struct mmsghdr in[BATCH];
    struct iovec in_iov[BATCH];
    struct sockaddr_storage in_addr[BATCH];
    struct mmsghdr out[BATCH];
    struct iovec out_iov[BATCH];
    struct sockaddr_storage out_addr[BATCH];
    int out_fd; /* the socket the pending sends (out[0..out_n)) go to */
    int out_n;
    int out_to_peer; /* which drop counter a failed send goes to */
    Py_ssize_t max_payload;
    unsigned int channel_max;
    /* the Send indication shape the core's fast path accepts (relay.turn.core.SendShape) */
    unsigned int send_peer_type, send_data_type;
    unsigned int send_ignored[MAX_SEND_IGNORED];
    int send_ignored_n;
    unsigned long long to_peer_packets, to_peer_bytes, to_client_packets, to_client_bytes;
    unsigned long long peer_send_dropped, client_send_dropped, recv_errors;
} Forwarder;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Flush the pending sends: sendmmsg(2) until all went or failed. A failed datagram is loss
 * (UDP: a full buffer or an unreachable peer is not a reason to wait), counted and skipped. */
static void flush(Forwarder *self) {
    int done = 0;
    while (done < self->out_n) {
        int r = sendmmsg(self->out_fd, self->out + done, (unsigned int)(self->out_n - done), 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (self->out_to_peer)
                self->peer_send_dropped++;
            else
                self->client_send_dropped++;
            done++;
        } else {
            done += r;
        }
    }
    self->out_n = 0;
}

/* Queue one datagram; the data stays in self->buf until the batch is flushed. */
static void queue_send(Forwarder *self, int fd, int to_peer, unsigned char *data, size_t len,
                       PyObject *sockaddr) {
    Py_ssize_t salen = PyBytes_GET_SIZE(sockaddr);
    if (self->out_n && (self->out_fd != fd || self->out_n == BATCH))
        flush(self);
    int i = self->out_n++;
    self->out_fd = fd;
    self->out_to_peer = to_peer;
    memcpy(&self->out_addr[i], PyBytes_AS_STRING(sockaddr), (size_t)salen);
    self->out_iov[i].iov_base = data;
    self->out_iov[i].iov_len = len;
    struct msghdr *h = &self->out[i].msg_hdr;
    h->msg_name = &self->out_addr[i];
    h->msg_namelen = (socklen_t)salen;
    h->msg_iov = &self->out_iov[i];
    h->msg_iovlen = 1;
    h->msg_control = NULL;
    h->msg_controllen = 0;
    h->msg_flags = 0;
}

/* The route for key, if its tuple is well formed and its deadline has not passed. */
static PyObject *live_route(PyObject *routes, const unsigned char *key, Py_ssize_t keylen,
                            double now, Py_ssize_t arity, int *fd) {
    PyObject *k = PyBytes_FromStringAndSize((const char *)key, keylen);
    if (k == NULL)
        return NULL;
    PyObject *route = PyDict_GetItemWithError(routes, k); /* borrowed */
    Py_DECREF(k);
    if (route == NULL || !PyTuple_CheckExact(route) || PyTuple_GET_SIZE(route) != arity)
        return NULL;
    PyObject *f = PyTuple_GET_ITEM(route, 0), *sa = PyTuple_GET_ITEM(route, 1),
             *deadline = PyTuple_GET_ITEM(route, 2);
    if (!PyLong_CheckExact(f) || !PyBytes_CheckExact(sa) || !PyFloat_CheckExact(deadline))
        return NULL;
    if (PyBytes_GET_SIZE(sa) > (Py_ssize_t)sizeof(struct sockaddr_storage))
        return NULL;
    if (!(now < PyFloat_AS_DOUBLE(deadline)))
        return NULL;
    long v = PyLong_AsLong(f);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return NULL;
    }
    if (v < 0 || v > INT_MAX)
        return NULL;
    *fd = (int)v;
    return route;
}

/* Key prefix from a source address: IP then port, both as on the wire. */
static Py_ssize_t address_key(const struct sockaddr_storage *ss, unsigned char *key) {
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        memcpy(key, &sin->sin_addr, 4);
        memcpy(key + 4, &sin->sin_port, 2);
        return 6;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        memcpy(key, &sin6->sin6_addr, 16);
        memcpy(key + 16, &sin6->sin6_port, 2);
        return 18;
    }
    return -1;
}

/* (bytes, (host, port)) for a datagram the Python path handles. */
static int append_leftover(PyObject *list, const unsigned char *data, size_t len,
                           const struct sockaddr_storage *ss) {
    char host[INET6_ADDRSTRLEN];
    int port;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
        port = ntohs(sin->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
        port = ntohs(sin6->sin6_port);
    } else {
        return 0; /* no address family we serve: dropped */
    }
    PyObject *item = Py_BuildValue("(y#(si))", (const char *)data, (Py_ssize_t)len, host, port);
    if (item == NULL)
        return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

/* recvmmsg(2) up to n datagrams into the slots (each after HEADROOM bytes); -1 when none. */
static int receive(Forwarder *self, int fd, int n) {
    for (int i = 0; i < n; i++) {
        self->in_iov[i].iov_base = self->buf + (size_t)i * SLOT + HEADROOM;
        self->in_iov[i].iov_len = RECV_SIZE;
        struct msghdr *h = &self->in[i].msg_hdr;
        h->msg_name = &self->in_addr[i];
        h->msg_namelen = sizeof(struct sockaddr_storage);
        h->msg_iov = &self->in_iov[i];
        h->msg_iovlen = 1;
        h->msg_control = NULL;
        h->msg_controllen = 0;
        h->msg_flags = 0;
    }
    for (;;) {
        int got = recvmmsg(fd, self->in, (unsigned int)n, MSG_DONTWAIT, NULL);
        if (got >= 0 || errno != EINTR)
            return got;
    }
}

static int send_ignored(const Forwarder *self, unsigned int type) {
    for (int i = 0; i < self->send_ignored_n; i++)
        if (self->send_ignored[i] == type)
            return 1;
    return 0;
}

/* A Send indication this loop may forward: the shape the core's fast path accepts, as the
 * core described it at init (relay.turn.core.SendShape, RFC 8656 §11.2). Sets the
 * XOR-PEER-ADDRESS value and the payload; 0 when the full path must see it. */
static int plain_send(const Forwarder *self, const unsigned char *d, size_t len,
                      const unsigned char **peer, const unsigned char **payload,
                      size_t *payload_len) {
    if (len < 20 || ((d[0] << 8) | d[1]) != SEND_INDICATION)
        return 0;
    uint32_t cookie = ((uint32_t)d[4] << 24) | ((uint32_t)d[5] << 16) | ((uint32_t)d[6] << 8) | d[7];
    if (cookie != MAGIC_COOKIE || (size_t)((d[2] << 8) | d[3]) != len - 20)
        return 0;
    size_t off = 20, peer_len = 0;
    int have_data = 0;
    *peer = NULL;
    while (off < len) {
        if (off + 4 > len)
            return 0;
        unsigned int type = (d[off] << 8) | d[off + 1];
        size_t alen = (d[off + 2] << 8) | d[off + 3];
        size_t end = off + 4 + alen;
        if (end > len)
            return 0;
        if (type == self->send_peer_type && *peer == NULL) {
            *peer = d + off + 4;
            peer_len = alen;
        } else if (type == self->send_data_type && !have_data) {
            *payload = d + off + 4;
            *payload_len = alen;
            have_data = 1;
        } else if (!send_ignored(self, type)) {
            return 0;
        }
        off = end + ((4 - alen % 4) % 4);
    }
    return have_data && *peer != NULL && peer_len == 8 && (*peer)[1] == 0x01;
}

/* What a forward function says of one datagram. */
enum { LEFTOVER = 0, FORWARDED = 1, FAILED = -1 };

/* Decide one datagram: queue it for sending over a live route (FORWARDED), leave it to the
 * Python path (LEFTOVER), or FAILED with a Python exception set. */
typedef int (*forward_fn)(Forwarder *self, PyObject *const *tables, unsigned char *d, size_t len,
                          const struct sockaddr_storage *from, double now);

/* Client side: ChannelData (RFC 8656 §12.4) and plain Send indications (§11.2). */
static int forward_from_client(Forwarder *self, PyObject *const *tables, unsigned char *d,
                               size_t len, const struct sockaddr_storage *from, double now) {
    unsigned char key[32];
    Py_ssize_t klen = address_key(from, key);
    int out_fd = -1;
    PyObject *route = NULL;
    size_t plen = 0;
    unsigned char *payload = NULL;
    if (klen < 0)
        return LEFTOVER;
    if (len >= 4 && d[0] >= 0x40 && d[0] <= 0x7F) {
        /* ChannelData; UDP may carry padding after the payload */
        unsigned int number = (d[0] << 8) | d[1];
        size_t length = (d[2] << 8) | d[3];
        if (number > self->channel_max || length > len - 4)
            return LEFTOVER;
        memcpy(key + klen, d, 2);
        route = live_route(tables[0], key, klen + 2, now, 3, &out_fd);
        payload = d + 4;
        plen = length;
    } else {
        const unsigned char *peer = NULL, *data = NULL;
        if (!plain_send(self, d, len, &peer, &data, &plen))
            return LEFTOVER;
        memcpy(key + klen, peer, 8);
        route = live_route(tables[1], key, klen + 8, now, 3, &out_fd);
        payload = (unsigned char *)data;
    }
    if (route == NULL)
        return PyErr_Occurred() ? FAILED : LEFTOVER;
    self->to_peer_packets++;
    self->to_peer_bytes += plen;
    queue_send(self, out_fd, 1, payload, plen, PyTuple_GET_ITEM(route, 1));
    return FORWARDED;
}

/* Peer side: a datagram from a peer with a channel to its client (RFC 8656 §12.7). */
static int forward_from_peer(Forwarder *self, PyObject *const *tables, unsigned char *d,
                             size_t len, const struct sockaddr_storage *from, double now) {
    unsigned char key[32];
    Py_ssize_t klen = address_key(from, key);
    int out_fd = -1;
    if (klen < 0 || (Py_ssize_t)len > self->max_payload || len > 0xFFFF)
        return LEFTOVER;
    PyObject *route = live_route(tables[0], key, klen, now, 4, &out_fd);
    if (route == NULL)
        return PyErr_Occurred() ? FAILED : LEFTOVER;
    PyObject *number = PyTuple_GET_ITEM(route, 3);
    long channel = PyLong_CheckExact(number) ? PyLong_AsLong(number) : -1;
    if (channel == -1 && PyErr_Occurred())
        PyErr_Clear();
    if (channel < CHANNEL_MIN || channel > 0x7FFF)
        return LEFTOVER;
    unsigned char *frame = d - HEADROOM; /* the slot's headroom */
    frame[0] = (unsigned char)(channel >> 8);
    frame[1] = (unsigned char)channel;
    frame[2] = (unsigned char)(len >> 8);
    frame[3] = (unsigned char)len;
    self->to_client_packets++;
    self->to_client_bytes += len;
    queue_send(self, out_fd, 0, frame, len + HEADROOM, PyTuple_GET_ITEM(route, 1));
    return FORWARDED;
}

/* Read up to max_reads datagrams from fd in bursts, forward what forward() takes, and return
 * the rest as a list of (bytes, (host, port)). */
static PyObject *drain(Forwarder *self, int fd, int max_reads, forward_fn forward,
                       PyObject *const *tables) {
    PyObject *rest = PyList_New(0);
    if (rest == NULL)
        return NULL;
    int reads = 0;
    while (reads < max_reads) {
        int want = max_reads - reads < BATCH ? max_reads - reads : BATCH;
        int got = receive(self, fd, want);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            self->recv_errors++; /* e.g. ICMP port unreachable surfaced as ECONNREFUSED */
            reads++;
            continue;
        }
        reads += got;
        double now = now_seconds();
        for (int i = 0; i < got; i++) {
            unsigned char *d = self->in_iov[i].iov_base;
            size_t len = self->in[i].msg_len;
            int r = forward(self, tables, d, len, &self->in_addr[i], now);
            if (r == FAILED || (r == LEFTOVER && append_leftover(rest, d, len, &self->in_addr[i]) < 0))
                goto error;
        }
        if (self->out_n)
            flush(self);
        if (got < want)
            break; /* drained: spare the syscall that would say EAGAIN */
    }
    return rest;
error:
    if (self->out_n)
        flush(self);
    Py_DECREF(rest);
    return NULL;
}

PyDoc_STRVAR(from_clients_doc,
"from_clients(fd, channel_routes, send_routes, max_reads) -> list[(bytes, (host, port))]\n\n"
"Read up to max_reads datagrams from a client-facing UDP socket; forward ChannelData and Send\n"
"indications that match a live route; return the rest for the full path.");

static PyObject *Forwarder_from_clients(Forwarder *self, PyObject *args) {
    int fd, max_reads;
    PyObject *tables[2];
    if (!PyArg_ParseTuple(args, "iO!O!i", &fd, &PyDict_Type, &tables[0], &PyDict_Type,
                          &tables[1], &max_reads))
        return NULL;
    return drain(self, fd, max_reads, forward_from_client, tables);
}

PyDoc_STRVAR(from_peers_doc,
"from_peers(fd, routes, max_reads) -> list[(bytes, (host, port))]\n\n"
"Read up to max_reads datagrams from a relayed-address socket; send those from peers with a\n"
"live channel route to their client as ChannelData (RFC 8656 §12.7); return the rest.");

static PyObject *Forwarder_from_peers(Forwarder *self, PyObject *args) {
    int fd, max_reads;
    PyObject *tables[1];
    if (!PyArg_ParseTuple(args, "iO!i", &fd, &PyDict_Type, &tables[0], &max_reads))
        return NULL;
    return drain(self, fd, max_reads, forward_from_peer, tables);
}

static PyObject *Forwarder_counters(Forwarder *self, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue(
        "{sKsKsKsKsKsKsK}", "relayed_to_peer_packets", self->to_peer_packets,
        "relayed_to_peer_bytes", self->to_peer_bytes, "relayed_to_client_packets",
        self->to_client_packets, "relayed_to_client_bytes", self->to_client_bytes,
        "peer_send_dropped", self->peer_send_dropped, "client_send_dropped",
        self->client_send_dropped, "datapath_recv_errors", self->recv_errors);
}

static int Forwarder_init(Forwarder *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"max_payload", "channel_max", "send_peer_type", "send_data_type",
                             "send_ignored_types", NULL};
    Py_ssize_t max_payload;
    unsigned int channel_max, peer_type, data_type;
    PyObject *ignored;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nIIIO!", kwlist, &max_payload, &channel_max,
                                     &peer_type, &data_type, &PyTuple_Type, &ignored))
        return -1;
    Py_ssize_t n_ignored = PyTuple_GET_SIZE(ignored);
    if (n_ignored > MAX_SEND_IGNORED) {
        PyErr_SetString(PyExc_ValueError, "too many ignored Send indication attribute types");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n_ignored; i++) {
        unsigned long type = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(ignored, i));
        if (PyErr_Occurred() || type > 0xFFFF) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "attribute types are 16-bit unsigned integers");
            return -1;
        }
        self->send_ignored[i] = (unsigned int)type;
    }
    self->send_ignored_n = (int)n_ignored;
    self->send_peer_type = peer_type;
    self->send_data_type = data_type;
    if (channel_max < CHANNEL_MIN || channel_max > 0x7FFF) {
        PyErr_SetString(PyExc_ValueError, "channel_max must be in 0x4000..0x7FFF");
        return -1;
    }
    self->max_payload = max_payload;
    self->channel_max = channel_max;
    if (self->buf == NULL) {
        self->buf = PyMem_RawMalloc((size_t)BATCH * SLOT);
        if (self->buf == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

static void Forwarder_dealloc(Forwarder *self) {
    PyMem_RawFree(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Forwarder_methods[] = {
    {"from_clients", (PyCFunction)Forwarder_from_clients, METH_VARARGS, from_clients_doc},
    {"from_peers", (PyCFunction)Forwarder_from_peers, METH_VARARGS, from_peers_doc},
    {"counters", (PyCFunction)Forwarder_counters, METH_NOARGS,
     "Packets and bytes this loop relayed, and sends it dropped."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ForwarderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "relay.server._datapath.Forwarder",
    .tp_basicsize = sizeof(Forwarder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "recvmmsg/sendmmsg packet loop over routes the TURN core approved.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Forwarder_init,
    .tp_dealloc = (destructor)Forwarder_dealloc,
    .tp_methods = Forwarder_methods,
};

PyDoc_STRVAR(sockaddr_doc,
"sockaddr(host, port) -> bytes: the struct sockaddr_in/sockaddr_in6 sendmmsg(2) takes.");

static PyObject *datapath_sockaddr(PyObject *Py_UNUSED(module), PyObject *args) {
    const char *host;
    int port;
    if (!PyArg_ParseTuple(args, "si", &host, &port))
        return NULL;
    if (port < 0 || port > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return NULL;
    }
    if (strchr(host, ':') == NULL) {
        struct sockaddr_in sin;
        memset(&sin, 0, sizeof sin);
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &sin.sin_addr) == 1)
            return PyBytes_FromStringAndSize((const char *)&sin, sizeof sin);
    } else {
        struct sockaddr_in6 sin6;
        memset(&sin6, 0, sizeof sin6);
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1)
            return PyBytes_FromStringAndSize((const char *)&sin6, sizeof sin6);
    }
    PyErr_Format(PyExc_ValueError, "not an IP address: %s", host);
    return NULL;
}

static PyMethodDef datapath_functions[] = {
    {"sockaddr", datapath_sockaddr, METH_VARARGS, sockaddr_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef datapath_module = {
    PyModuleDef_HEAD_INIT, "relay.server._datapath",
    "The relay's recvmmsg/sendmmsg packet loop (see relay/server/datapath.py).", -1,
    datapath_functions,
};

PyMODINIT_FUNC PyInit__datapath(void) {
    if (PyType_Ready(&ForwarderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&datapath_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ForwarderType);
    if (PyModule_AddObject(m, "Forwarder", (PyObject *)&ForwarderType) < 0) {
        Py_DECREF(&ForwarderType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "BATCH", BATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
