// libsqlvdi.cpp -- vdisim's drop-in libsqlvdi.so: the Linux VDI client API (include/vdi.h)
// speaking vdisim's wire protocol (docs/wire.md) to the vdisim engine.
//
// It mirrors vdisim/client/core.py and api.py: the same objects (control segment, listening
// socket, buffer area), the same frames (HELLO/WELCOME/CONFIGURE/COMMAND/COMPLETION/...), the
// same EVENT frame for every API call, and the same return codes, ported from the client state
// table (vdisim/protocol/states.py, docs/states.md).  One hub thread per set owns the sockets;
// API calls wait on a pthread condition variable on CLOCK_MONOTONIC with a deadline, and every
// wait also wakes on abort and on the engine's death.
//
// Not implemented: secondaries (OpenInSecondary returns VD_E_PROTOCOL, the documented code for
// "no set ready for secondaries"; a secondary's HELLO is refused with WELCOME(VD_E_PROTOCOL)).

#include "vdi.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

// ----------------------------------------------------------------------------- constants

const uint32_t HR_NOERROR = 0;
const uint32_t HR_TIMEOUT = 0x80770003u;
const uint32_t HR_ABORT = 0x80770004u;
const uint32_t HR_INVALID = 0x80770006u;
const uint32_t HR_NOTSUPPORTED = 0x80770009u;
const uint32_t HR_MEMORY = 0x8077000Au;
const uint32_t HR_PROTOCOL = 0x8077000Cu;
const uint32_t HR_OPEN = 0x8077000Du;
const uint32_t HR_CLOSE = 0x8077000Eu;
const uint32_t HR_ALREADY_EXISTS = 0x800700B7u;  // HRESULT_FROM_WIN32(ERROR_ALREADY_EXISTS)

const uint32_t W_SUCCESS = 0;
const uint32_t W_INVALID_HANDLE = 6;
const uint32_t W_IO_DEVICE = 1117;

const char MAGIC[4] = {'V', 'D', 'I', '1'};
const uint16_t PROTOCOL_VERSION = 1;
const size_t HEADER_SIZE = 12;
const uint32_t MAX_PAYLOAD = 1u << 20;
const size_t TOKEN_SIZE = 16;
const size_t CONTROL_SIZE = 4096;
const size_t NAME_OFFSET = 128;
const size_t INSTANCE_OFFSET = 512;
const size_t AREA_HEADER_SPACE = 4096;
const uint32_t DESC_IN_USE = 0x55534544u;
const int64_t SEND_TIMEOUT_S = 10;

enum FrameType : uint16_t {
    F_HELLO = 1, F_WELCOME = 2, F_CONFIGURE = 3, F_COMMAND = 4, F_COMPLETION = 5,
    F_CLOSE_DEVICE = 6, F_ABORT = 7, F_SERVER_CLOSE = 8, F_EVENT = 9, F_OPEN_DEVICE_REQ = 10,
    F_OPEN_DEVICE_REPLY = 11, F_GOODBYE = 12
};

enum AbortReason : uint32_t {
    AR_CLIENT_SIGNAL_ABORT = 1, AR_SERVER_SIGNAL_ABORT = 2, AR_CLIENT_CLOSE_WITH_DEVICES_OPEN = 3,
    AR_SERVER_TIMEOUT = 4, AR_PEER_DIED = 5, AR_LIBRARY_ERROR = 6,
    AR_SERVER_CLOSE_WITH_DEVICES_OPEN = 7
};

enum EventCall : uint16_t {
    E_CREATE = 1, E_GET_CONFIGURATION = 2, E_OPEN_DEVICE = 3, E_GET_COMMAND = 4,
    E_COMPLETE_COMMAND = 5, E_SIGNAL_ABORT = 6, E_CLOSE = 7, E_OPEN_IN_SECONDARY = 8,
    E_GET_BUFFER_HANDLE = 9, E_MAP_BUFFER_HANDLE = 10
};

// Feature bits (spec section 5) used by the configuration check.
const uint32_t F_SERVER = 0x10000u | 0x20000u | 0x40000u;
const uint32_t F_MODEL_OPTIONS = 0x80u | 0x400u | 0x2000u | 0x800u | 0x1000u | 0x80000000u;

// ----------------------------------------------------------------------------- helpers

void logf(const char *fmt, ...) {
    if (!getenv("VDISIM_DEBUG")) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "vdisim-native[%d]: ", (int)getpid());
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void put16(std::string &s, uint16_t v) {
    char b[2] = {(char)(v & 0xff), (char)(v >> 8)};
    s.append(b, 2);
}
void put32(std::string &s, uint32_t v) {
    for (int i = 0; i < 4; i++) s.push_back((char)((v >> (8 * i)) & 0xff));
}
void put64(std::string &s, uint64_t v) {
    for (int i = 0; i < 8; i++) s.push_back((char)((v >> (8 * i)) & 0xff));
}
uint16_t get16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
uint64_t get64(const unsigned char *p) {
    return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32);
}

std::string frame(uint16_t type, const std::string &payload) {
    std::string s(MAGIC, 4);
    put16(s, type);
    put16(s, 0);
    put32(s, (uint32_t)payload.size());
    s += payload;
    return s;
}

std::string encode_completion(uint16_t device, uint32_t cmd_id, uint32_t code, uint32_t nbytes,
                              uint64_t position, bool generated) {
    std::string p;
    put16(p, device);
    put16(p, generated ? 1 : 0);
    put32(p, cmd_id);
    put32(p, code);
    put32(p, nbytes);
    put64(p, position);
    return frame(F_COMPLETION, p);
}

std::string encode_abort(uint32_t reason) {
    std::string p;
    put32(p, reason);
    return frame(F_ABORT, p);
}

std::string encode_welcome(uint32_t status, bool aborted) {
    std::string p;
    put32(p, status);
    p.push_back(0);
    p.push_back(aborted ? 1 : 0);
    put16(p, 0);
    return frame(F_WELCOME, p);
}

uint64_t monotonic_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// --- SHA-256 (FIPS 180-4), for the set key -------------------------------------------------

struct Sha256 {
    uint32_t h[8];
    unsigned char buf[64];
    uint64_t len = 0;
    size_t used = 0;
    static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
    Sha256() {
        static const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
        memcpy(h, init, sizeof h);
    }
    void block(const unsigned char *p) {
        static const uint32_t k[64] = {
            0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
            0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
            0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
            0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
            0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
            0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
            0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
            0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
            0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
            0xc67178f2};
        uint32_t w[64];
        for (int i = 0; i < 16; i++)
            w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16)
                   | ((uint32_t)p[4 * i + 2] << 8) | p[4 * i + 3];
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int i = 0; i < 64; i++) {
            uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
            uint32_t ch = (e & f) ^ (~e & g);
            uint32_t t1 = hh + S1 + ch + k[i] + w[i];
            uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
            uint32_t mj = (a & b) ^ (a & c) ^ (b & c);
            uint32_t t2 = S0 + mj;
            hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
    void update(const void *data, size_t n) {
        const unsigned char *p = (const unsigned char *)data;
        len += n;
        while (n) {
            size_t take = std::min(n, (size_t)64 - used);
            memcpy(buf + used, p, take);
            used += take; p += take; n -= take;
            if (used == 64) { block(buf); used = 0; }
        }
    }
    std::string hex() {
        uint64_t bits = len * 8;
        unsigned char pad = 0x80;
        update(&pad, 1);
        unsigned char zero = 0;
        while (used != 56) update(&zero, 1);
        unsigned char l[8];
        for (int i = 0; i < 8; i++) l[i] = (unsigned char)(bits >> (56 - 8 * i));
        update(l, 8);
        static const char *digits = "0123456789abcdef";
        std::string out;
        for (int i = 0; i < 8; i++)
            for (int j = 28; j >= 0; j -= 4) out.push_back(digits[(h[i] >> j) & 0xf]);
        return out;
    }
};

// --- naming (vdisim/transport/naming.py) ---------------------------------------------------

std::string prefix() {
    const char *ns = getenv("VDISIM_NAMESPACE");
    std::string p = "vdisim";
    if (ns && *ns) {
        size_t n = strlen(ns);
        bool ok = n <= 4;
        for (size_t i = 0; ok && i < n; i++)
            ok = (ns[i] >= 'a' && ns[i] <= 'z') || (ns[i] >= 'A' && ns[i] <= 'Z')
                 || (ns[i] >= '0' && ns[i] <= '9');
        if (ok) p += ns;
    }
    return p + "-";
}

std::string set_key(const std::string &name) {
    Sha256 s;
    const char inst[] = "MSSQLSERVER";  // Linux has no named instances (section 10)
    s.update(inst, sizeof inst);  // includes the NUL separator
    s.update(name.data(), name.size());
    return s.hex().substr(0, 16);
}

bool is_dir(const char *p) {
    struct stat st;
    return p && *p && stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

bool runtime_dir(std::string &out) {
    const char *env = getenv("VDISIM_RUNTIME_DIR");
    std::string path;
    if (env && *env) {
        path = env;
    } else {
        const char *tmp = nullptr;
        for (const char *var : {"TMPDIR", "TEMP", "TMP"}) {
            const char *v = getenv(var);
            if (is_dir(v)) { tmp = v; break; }
        }
        path = std::string(tmp ? tmp : "/tmp") + "/vdisim-" + std::to_string(geteuid());
    }
    if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) return false;
    struct stat st;
    if (stat(path.c_str(), &st) != 0 || st.st_uid != geteuid()) return false;
    if (st.st_mode & 077) chmod(path.c_str(), 0700);
    out = path;
    return true;
}

// --- segments (vdisim/transport/segments.py) -----------------------------------------------

// 1 alive, 0 dead, -1 gone
int owner_alive(const std::string &name) {
    std::string path = "/dev/shm/" + name;
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? -1 : 1;
    int alive = 1;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
        flock(fd, LOCK_UN);
        alive = 0;
    }
    close(fd);
    return alive;
}

void remove_if_dead(const std::string &name) {
    if (owner_alive(name) == 0) shm_unlink(("/" + name).c_str());
}

void *remove_when_dead_thread(void *arg) {
    std::string *name = (std::string *)arg;
    uint64_t deadline = monotonic_ns() + 2000000000ull;
    while (owner_alive(*name) == 1 && monotonic_ns() < deadline) usleep(10000);
    remove_if_dead(*name);
    delete name;
    return nullptr;
}

bool socket_alive(const std::string &path) {
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return false;
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    bool ok = connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    return ok;
}

// --- locking -------------------------------------------------------------------------------

struct Guard {
    pthread_mutex_t *m;
    explicit Guard(pthread_mutex_t *mu) : m(mu) { pthread_mutex_lock(m); }
    ~Guard() { pthread_mutex_unlock(m); }
    Guard(const Guard &) = delete;
    Guard &operator=(const Guard &) = delete;
};

struct Deadline {
    bool infinite = true;
    struct timespec at = {0, 0};
};

// None = wait forever (INFINITE or negative, section 2.2); else a CLOCK_MONOTONIC deadline.
Deadline deadline_from_ms(int64_t ms) {
    Deadline d;
    if (ms < 0 || ms >= 0xFFFFFFFFll) return d;
    d.infinite = false;
    clock_gettime(CLOCK_MONOTONIC, &d.at);
    d.at.tv_sec += ms / 1000;
    d.at.tv_nsec += (ms % 1000) * 1000000;
    if (d.at.tv_nsec >= 1000000000) {
        d.at.tv_sec += 1;
        d.at.tv_nsec -= 1000000000;
    }
    return d;
}

bool passed(const Deadline &d) {
    if (d.infinite) return false;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > d.at.tv_sec || (now.tv_sec == d.at.tv_sec && now.tv_nsec >= d.at.tv_nsec);
}

// ----------------------------------------------------------------------------- channel

struct Frame {
    uint16_t type;
    std::string payload;
};

bool valid_names(const unsigned char *p, size_t n, unsigned count, std::vector<std::string> *out) {
    size_t off = 0;
    std::vector<std::string> names;
    for (unsigned i = 0; i < count; i++) {
        if (off + 2 > n) return false;
        uint16_t len = get16(p + off);
        off += 2;
        if (len == 0 || len > 255 || off + len > n) return false;
        names.emplace_back((const char *)p + off, len);
        off += len;
    }
    if (off != n) return false;
    std::vector<std::string> sorted = names;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) return false;
    if (out) *out = names;
    return true;
}

// The checks every receiver makes (docs/wire.md "What a receiver checks").
bool valid_frame(uint16_t type, const std::string &p) {
    const unsigned char *u = (const unsigned char *)p.data();
    switch (type) {
    case F_HELLO: return p.size() == 24 && (u[0] == 1 || u[0] == 2);
    case F_WELCOME: return p.size() == 8;
    case F_CONFIGURE: {
        if (p.size() < 120) return false;
        uint32_t count = get16(u + 116);
        uint32_t dc = get32(u);
        if (count != dc || count < 1 || count > 64) return false;
        if (u[44] == 0) return false;
        for (int i = 44; i < 108 && u[i]; i++)
            if (u[i] >= 0x80 || u[i] == '/') return false;
        return valid_names(u + 120, p.size() - 120, count, nullptr);
    }
    case F_COMMAND: return p.size() == 40;
    case F_COMPLETION: return p.size() == 24;
    case F_CLOSE_DEVICE: return p.size() == 4;
    case F_ABORT: return p.size() == 4;
    case F_SERVER_CLOSE: return p.empty();
    case F_EVENT: return p.size() == 36 && get16(u) >= 1 && get16(u) <= 10;
    case F_OPEN_DEVICE_REQ: return p.size() >= 2 && valid_names(u + 2, p.size() - 2, 1, nullptr);
    case F_OPEN_DEVICE_REPLY: return p.size() == 6;
    case F_GOODBYE: return p.empty();
    default: return false;
    }
}

class Channel {
public:
    explicit Channel(int fd_) : fd(fd_) {
        pthread_mutex_init(&send_mu, nullptr);
        struct timeval tv = {SEND_TIMEOUT_S, 0};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    ~Channel() {
        ::close(fd);
        pthread_mutex_destroy(&send_mu);
    }
    Channel(const Channel &) = delete;
    Channel &operator=(const Channel &) = delete;

    int fd;
    std::atomic<bool> closed{false};

    // Queue bytes to go out with the next send (one write for both).
    void defer(const std::string &data) {
        Guard g(&send_mu);
        deferred += data;
    }

    bool send(const std::string &data) {
        Guard g(&send_mu);
        return send_locked(data);
    }

    bool send_locked(const std::string &data) {
        std::string all;
        const std::string *out = &data;
        if (!deferred.empty()) {
            all = deferred + data;
            deferred.clear();
            out = &all;
        }
        if (out->empty()) return true;
        if (closed) return false;
        const char *p = out->data();
        size_t n = out->size();
        while (n) {
            ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR) continue;
                return false;  // EPIPE, ECONNRESET, EAGAIN after SO_SNDTIMEO: the peer is gone
            }
            p += w;
            n -= (size_t)w;
        }
        return true;
    }

    void lock_send() { pthread_mutex_lock(&send_mu); }
    void unlock_send() { pthread_mutex_unlock(&send_mu); }

    // Shut the socket down; the descriptor is closed when the last reference goes.
    void close() {
        Guard g(&send_mu);
        if (closed.exchange(true)) return;
        shutdown(fd, SHUT_RDWR);
    }

    // 0: frames appended; -1: peer gone; -2: malformed frame.
    int read_available(std::vector<Frame> &out) {
        char chunk[65536];
        ssize_t r = recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
            return -1;
        }
        if (r == 0) return -1;
        rbuf.append(chunk, (size_t)r);
        size_t off = 0;
        while (rbuf.size() - off >= HEADER_SIZE) {
            const unsigned char *h = (const unsigned char *)rbuf.data() + off;
            if (memcmp(h, MAGIC, 4) != 0) return -2;
            uint16_t type = get16(h + 4);
            uint32_t len = get32(h + 8);
            if (len > MAX_PAYLOAD || type < F_HELLO || type > F_GOODBYE) return -2;
            if (rbuf.size() - off - HEADER_SIZE < len) break;
            Frame f{type, rbuf.substr(off + HEADER_SIZE, len)};
            if (!valid_frame(type, f.payload)) return -2;
            out.push_back(std::move(f));
            off += HEADER_SIZE + len;
        }
        rbuf.erase(0, off);
        return 0;
    }

private:
    pthread_mutex_t send_mu;
    std::string deferred;
    std::string rbuf;
};

using ChannelPtr = std::shared_ptr<Channel>;

// ----------------------------------------------------------------------------- the set core

enum class CS { DNE, CONFIGURABLE, INITIALIZING, ACTIVE, NORMALLY_TERMINATED, ABORT };
enum class DS { ACTIVE, IO_ERROR, CLOSED };

struct CmdFrame {
    uint16_t device;
    uint32_t cmd_id, code, size;
    uint64_t position, buffer_offset;
    uint32_t buffer_id;
};

struct Outstanding {
    VDC_Command cmd;  // first member: the pointer handed to the user
    uint32_t cmd_id;
    int device;
    uint32_t buffer_id;
};

struct Dev {
    int index = 0;
    std::string name;
    DS state = DS::ACTIVE;
    bool opened = false, opened_here = false, close_pending = false, close_seen = false;
    std::deque<CmdFrame> queue;
    std::map<uint32_t, Outstanding *> outstanding;

    bool has_deliverable() const {
        if (queue.empty()) return false;
        // section 6.6.3: in IO-ERROR, ClearError waits for every outstanding completion.
        return !(queue.front().code == VDC_ClearError && state == DS::IO_ERROR
                 && !outstanding.empty());
    }
};

class Core {
public:
    Core() {
        pthread_mutex_init(&mu, nullptr);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&cond, &ca);
        pthread_condattr_destroy(&ca);
        memset(&requested, 0, sizeof requested);
        memset(&config, 0, sizeof config);
        wake[0] = wake[1] = -1;
    }
    ~Core() {
        for (int fd : wake)
            if (fd >= 0) ::close(fd);
        pthread_cond_destroy(&cond);
        pthread_mutex_destroy(&mu);
    }
    Core(const Core &) = delete;
    Core &operator=(const Core &) = delete;

    pthread_mutex_t mu;
    pthread_cond_t cond;
    CS state = CS::CONFIGURABLE;
    uint32_t abort_reason = 0;
    std::string name, key;
    unsigned char token[TOKEN_SIZE] = {0};
    VDConfig requested, config;
    bool configured = false;
    std::vector<Dev> devices;
    std::unordered_map<VDC_Command *, Outstanding *> by_ptr;
    // Completed commands are freed late, so that a completed VDC_Command* handed back again
    // (a double CompleteCommand) cannot alias a newer command and is answered VD_E_INVALID.
    std::deque<Outstanding *> retired;

    void retire(Outstanding *o) {
        retired.push_back(o);
        if (retired.size() > 4096) {
            delete retired.front();
            retired.pop_front();
        }
    }
    unsigned char *area = nullptr;
    size_t area_map_size = 0;
    uint64_t area_size = 0, area_data_offset = 0;
    uint32_t area_capacity = 0, area_prefix = 0;
    std::string area_segment;
    ChannelPtr upstream;
    bool upstream_done = false;
    std::vector<ChannelPtr> pending;
    std::string pre_events;
    int listener = -1;
    std::string socket_path;
    int control_fd = -1;
    void *control_map = nullptr;
    std::string control_name;
    int wake[2];
    pthread_t hub;
    bool hub_started = false;
    std::atomic<bool> closing{false};

    // -------------------------------------------------------------- waiting (caller holds mu)
    template <class Pred> bool wait(Pred pred, const Deadline &d) {
        while (!pred()) {
            if (state == CS::ABORT || state == CS::DNE) return true;
            if (d.infinite) {
                pthread_cond_wait(&cond, &mu);
                continue;
            }
            if (passed(d)) return false;
            pthread_cond_timedwait(&cond, &mu, &d.at);
        }
        return true;
    }

    // -------------------------------------------------------------- sending
    bool send_up(const std::string &data) {
        ChannelPtr ch;
        {
            Guard g(&mu);
            ch = upstream;
        }
        return ch ? ch->send(data) : false;
    }

    // An EVENT frame for an API call (the client's trace on the wire).
    void report(uint16_t call, int device, uint32_t hr, uint32_t a = 0, uint32_t b = 0,
                int64_t c = 0, bool defer = false) {
        std::string p;
        put16(p, call);
        put16(p, (uint16_t)(int16_t)device);
        put32(p, hr);
        put32(p, a);
        put32(p, b);
        put32(p, (uint32_t)getpid());
        put64(p, (uint64_t)c);
        put64(p, monotonic_ns());
        std::string data = frame(F_EVENT, p);
        ChannelPtr ch;
        {
            Guard g(&mu);
            ch = upstream;
            if (!ch) {
                pre_events += data;
                return;
            }
        }
        if (defer)
            ch->defer(data);
        else
            ch->send(data);
    }

    // Enter Abort (section 8.2): wake every waiter; tell the engine.
    void abort(uint32_t reason, bool notify) {
        ChannelPtr up;
        {
            Guard g(&mu);
            if (state == CS::DNE || state == CS::ABORT) return;  // idempotent (section 2.6)
            abort_reason = reason;
            state = CS::ABORT;
            pthread_cond_broadcast(&cond);
            up = upstream;
        }
        if (notify && up) up->send(encode_abort(reason));
    }

    void wake_hub() {
        char x = 'x';
        if (wake[1] >= 0) (void)!write(wake[1], &x, 1);
    }

    // -------------------------------------------------------------- hub thread
    static void *hub_main(void *arg) {
        ((Core *)arg)->hub_loop();
        return nullptr;
    }

    void hub_loop() {
        try {
            while (!closing) {
                std::vector<ChannelPtr> chans;
                {
                    Guard g(&mu);
                    for (auto &c : pending)
                        if (!c->closed) chans.push_back(c);
                    if (upstream && !upstream->closed) chans.push_back(upstream);
                }
                std::vector<struct pollfd> fds;
                fds.push_back({wake[0], POLLIN, 0});
                if (listener >= 0) fds.push_back({listener, POLLIN, 0});
                size_t first = fds.size();
                for (auto &c : chans) fds.push_back({c->fd, POLLIN, 0});
                int n = poll(fds.data(), fds.size(), -1);
                if (n < 0) {
                    if (errno == EINTR) continue;
                    throw std::runtime_error("poll failed");
                }
                if (closing) break;
                if (fds[0].revents) {
                    char buf[256];
                    while (read(wake[0], buf, sizeof buf) > 0) {}
                }
                if (listener >= 0 && fds[1].revents) accept_one();
                for (size_t i = first; i < fds.size(); i++) {
                    if (!fds[i].revents) continue;
                    ChannelPtr ch = chans[i - first];
                    if (ch->closed) continue;
                    std::vector<Frame> batch;
                    int rc = ch->read_available(batch);
                    for (auto &f : batch) {
                        if (ch->closed) break;
                        dispatch(ch, f);
                    }
                    if (rc < 0) {
                        if (rc == -2) logf("malformed frame from peer");
                        peer_gone(ch, rc == -2);
                    }
                }
            }
        } catch (...) {
            logf("hub failed: aborting the set");
            abort(AR_LIBRARY_ERROR, true);
        }
    }

    void accept_one() {
        int s = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (s < 0) return;
        struct ucred cred;
        socklen_t len = sizeof cred;
        if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid != geteuid()) {
            logf("refused connection from uid %d", (int)cred.uid);
            ::close(s);
            return;
        }
        Guard g(&mu);
        pending.push_back(std::make_shared<Channel>(s));
    }

    bool is_pending(const ChannelPtr &ch) {
        Guard g(&mu);
        return std::find(pending.begin(), pending.end(), ch) != pending.end();
    }

    void dispatch(const ChannelPtr &ch, const Frame &f) {
        if (is_pending(ch)) {
            handshake(ch, f);
            return;
        }
        ChannelPtr up;
        {
            Guard g(&mu);
            up = upstream;
        }
        if (ch == up) from_upstream(f);
    }

    void handshake(const ChannelPtr &ch, const Frame &f) {
        {
            Guard g(&mu);
            pending.erase(std::find(pending.begin(), pending.end(), ch));
        }
        const unsigned char *u = (const unsigned char *)f.payload.data();
        if (f.type != F_HELLO || memcmp(u + 8, token, TOKEN_SIZE) != 0) {
            logf("connection without a valid HELLO refused");
            ch->close();
            return;
        }
        if (get16(u + 2) != PROTOCOL_VERSION) {
            ch->send(encode_welcome(HR_NOTSUPPORTED, false));
            ch->close();
            return;
        }
        if (u[0] != 1) {  // a secondary: not implemented by this library
            logf("secondary refused: this library does not serve secondaries");
            ch->send(encode_welcome(HR_PROTOCOL, false));
            ch->close();
            return;
        }
        // Hold the channel's send lock while it becomes the upstream, so that no API call's
        // EVENT can overtake the WELCOME.
        ch->lock_send();
        bool refuse;
        bool aborted = false;
        uint32_t reason = 0;
        std::string kept;
        {
            Guard g(&mu);
            refuse = upstream != nullptr || state == CS::DNE;
            if (!refuse) {
                upstream = ch;
                kept.swap(pre_events);
                aborted = state == CS::ABORT;
                reason = abort_reason;
            }
        }
        std::string out = encode_welcome(refuse ? HR_PROTOCOL : HR_NOERROR, refuse ? false : aborted);
        if (!refuse) {
            out += kept;
            if (aborted) out += encode_abort(reason);
        }
        ch->send_locked(out);
        ch->unlock_send();
        if (refuse) ch->close();
    }

    void from_upstream(const Frame &f) {
        const unsigned char *u = (const unsigned char *)f.payload.data();
        switch (f.type) {
        case F_COMMAND: {
            CmdFrame c;
            c.device = get16(u);
            c.cmd_id = get32(u + 4);
            c.code = get32(u + 8);
            c.size = get32(u + 12);
            c.position = get64(u + 16);
            c.buffer_offset = get64(u + 24);
            c.buffer_id = get32(u + 32);
            on_command(c);
            break;
        }
        case F_CONFIGURE: on_configure(f.payload); break;
        case F_CLOSE_DEVICE: on_close_device(get16(u)); break;
        case F_ABORT: abort(get32(u), false); break;
        case F_SERVER_CLOSE: on_server_close(); break;
        default: logf("unexpected frame type %d from upstream ignored", (int)f.type);
        }
    }

    const char *check_area(const unsigned char *a, size_t map_size) {
        if (map_size < AREA_HEADER_SPACE) return "buffer area smaller than its header";
        if (memcmp(a, "VDBA", 4) != 0 || get32(a + 4) != 1) return "not a vdisim buffer area";
        uint64_t size = get64(a + 8), table = get64(a + 16), data = get64(a + 32);
        uint32_t cap = get32(a + 24);
        if (size > map_size || table != AREA_HEADER_SPACE || data < table + (uint64_t)cap * 16
            || data > size)
            return "buffer area header is inconsistent";
        if (memcmp(a + 44, token, TOKEN_SIZE) != 0) return "buffer area token mismatch";
        return nullptr;
    }

    void on_configure(const std::string &p) {
        const unsigned char *u = (const unsigned char *)p.data();
        VDConfig cfg;
        memcpy(&cfg, u, sizeof cfg);  // eleven little-endian u32
        std::string seg((const char *)u + 44, strnlen((const char *)u + 44, 64));
        std::vector<std::string> names;
        valid_names(u + 120, p.size() - 120, get16(u + 116), &names);
        const char *problem = nullptr;
        unsigned char *map = nullptr;
        size_t map_size = 0;
        if (cfg.deviceCount != requested.deviceCount) {
            problem = "engine configured a different device count";
        } else {
            size_t cut = seg.rfind("-b");
            if (cut == std::string::npos || seg.substr(0, cut) != prefix() + key)
                problem = "buffer segment does not belong to this set";
        }
        if (!problem) {
            int fd = shm_open(("/" + seg).c_str(), O_RDWR | O_CLOEXEC, 0);
            struct stat st;
            if (fd < 0) {
                problem = "cannot map the buffer area: no such segment";
            } else if (fstat(fd, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 077)) {
                problem = "cannot map the buffer area: wrong owner or mode";
            } else {
                map_size = (size_t)st.st_size;
                void *m = map_size ? mmap(nullptr, map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                                          fd, 0)
                                   : MAP_FAILED;
                if (m == MAP_FAILED) {
                    problem = "cannot map the buffer area: mmap failed";
                } else {
                    map = (unsigned char *)m;
                    problem = check_area(map, map_size);
                    if (problem) {
                        munmap(map, map_size);
                        map = nullptr;
                    }
                }
            }
            if (fd >= 0) ::close(fd);
        }
        if (problem) {
            // Like libsqlvdi's TriggerAbort when the shared memory is unusable (section 11.1).
            logf("%s", problem);
            abort(AR_LIBRARY_ERROR, true);
            return;
        }
        Guard g(&mu);
        area = map;
        area_map_size = map_size;
        area_size = get64(map + 8);
        area_capacity = get32(map + 24);
        area_prefix = get32(map + 28);
        area_data_offset = get64(map + 32);
        area_segment = seg;
        config = cfg;
        devices.clear();
        for (size_t i = 0; i < names.size(); i++) {
            Dev d;
            d.index = (int)i;
            d.name = names[i];
            devices.push_back(std::move(d));
        }
        configured = true;
        pthread_cond_broadcast(&cond);
    }

    // (data offset, size) of an allocated buffer; false for an invalid handle.
    bool descriptor(uint32_t id, uint64_t &off, uint32_t &size) {
        if (!area || id < 1 || id > area_capacity) return false;
        const unsigned char *d = area + AREA_HEADER_SPACE + (size_t)(id - 1) * 16;
        if ((size_t)(d - area) + 16 > area_map_size) return false;
        if (get32(d + 12) != DESC_IN_USE) return false;
        off = get64(d);
        size = get32(d + 8);
        return true;
    }

    bool check_reference(uint32_t id, uint64_t offset, uint32_t size) {
        uint64_t off;
        uint32_t bsize;
        if (!descriptor(id, off, bsize)) return false;
        return off <= offset && offset + size <= off + bsize && off + bsize <= area_size;
    }

    const char *invalid_command(const CmdFrame &c) {
        if (c.device >= devices.size()) return "command for unknown device";
        if (c.code == VDC_Read || c.code == VDC_Write) {
            if (!area || !configured) return "data command before configuration";
            if (c.size > config.maxTransferSize) return "transfer exceeds maxTransferSize";
            if (!check_reference(c.buffer_id, c.buffer_offset, c.size))
                return "buffer reference outside the buffer area";
        }
        return nullptr;  // unknown codes are delivered (section 6.4)
    }

    void on_command(const CmdFrame &c) {
        const char *problem;
        uint32_t reject = 0;
        {
            Guard g(&mu);
            problem = invalid_command(c);
            if (!problem) {
                Dev &d = devices[c.device];
                if (d.state == DS::ACTIVE) {
                    d.queue.push_back(c);
                    pthread_cond_broadcast(&cond);
                } else if (d.state == DS::IO_ERROR) {
                    if (c.code == VDC_ClearError) {  // HOLD_UNTIL_DRAINED
                        d.queue.push_back(c);
                        pthread_cond_broadcast(&cond);
                    } else {
                        reject = W_IO_DEVICE;
                    }
                } else {
                    reject = W_INVALID_HANDLE;
                }
            }
        }
        if (problem) {
            logf("rejected command from engine: %s", problem);
            abort(AR_LIBRARY_ERROR, true);
            return;
        }
        // section 6.6.3: a command that reaches a device in IO-ERROR is never delivered.
        if (reject) send_up(encode_completion(c.device, c.cmd_id, reject, 0, 0, true));
    }

    void on_close_device(uint16_t index) {
        Guard g(&mu);
        if (index >= devices.size()) {
            logf("CloseDevice for unknown device %d ignored", (int)index);
            return;
        }
        devices[index].close_pending = true;
        devices[index].state = DS::CLOSED;
        pthread_cond_broadcast(&cond);
    }

    void on_server_close() {
        bool unfinished, terminated;
        {
            Guard g(&mu);
            upstream_done = true;
            bool all = !devices.empty();
            for (auto &d : devices) all = all && d.close_pending;
            unfinished = !(configured && all);
            terminated = state == CS::NORMALLY_TERMINATED || state == CS::ABORT
                         || state == CS::DNE;
        }
        // Server Close with devices open does SignalAbort processing (section 3 Close).
        if (unfinished && !terminated) abort(AR_SERVER_CLOSE_WITH_DEVICES_OPEN, false);
    }

    void peer_gone(const ChannelPtr &ch, bool malformed) {
        ch->close();
        bool is_up, done;
        std::string segment;
        {
            Guard g(&mu);
            auto it = std::find(pending.begin(), pending.end(), ch);
            if (it != pending.end()) {
                pending.erase(it);
                return;
            }
            is_up = ch == upstream;
            done = upstream_done || state == CS::NORMALLY_TERMINATED || state == CS::DNE;
            segment = area_segment;
        }
        if (!is_up) return;
        if (!done || malformed) {
            logf("engine connection lost: aborting the set");
            abort(malformed ? AR_LIBRARY_ERROR : AR_PEER_DIED, false);
        }
        if (!segment.empty()) {  // the engine died: remove its buffer area once its lock is free
            pthread_t t;
            std::string *arg = new std::string(segment);
            if (pthread_create(&t, nullptr, remove_when_dead_thread, arg) == 0)
                pthread_detach(t);
            else
                delete arg;
        }
    }

    // -------------------------------------------------------------- teardown
    void shutdown_all() {
        ChannelPtr up;
        std::vector<ChannelPtr> pend;
        {
            Guard g(&mu);
            closing = true;
            state = CS::DNE;
            pthread_cond_broadcast(&cond);
            up = upstream;
            pend = pending;
            for (auto &d : devices) {
                for (auto &kv : d.outstanding) delete kv.second;
                d.outstanding.clear();
                d.queue.clear();
            }
            by_ptr.clear();
            for (Outstanding *o : retired) delete o;
            retired.clear();
        }
        if (up) up->send(frame(F_GOODBYE, ""));
        wake_hub();
        if (hub_started && !pthread_equal(hub, pthread_self())) pthread_join(hub, nullptr);
        hub_started = false;
        for (auto &c : pend) c->close();
        if (up) up->close();
        if (listener >= 0) {
            ::close(listener);
            listener = -1;
        }
        if (!socket_path.empty()) unlink(socket_path.c_str());
        {
            Guard g(&mu);
            if (area) munmap(area, area_map_size);
            area = nullptr;
        }
        if (control_map) munmap(control_map, CONTROL_SIZE);
        control_map = nullptr;
        if (control_fd >= 0) {
            shm_unlink(("/" + control_name).c_str());
            ::close(control_fd);  // drops the owner lock
            control_fd = -1;
        }
    }
};

using CorePtr = std::shared_ptr<Core>;

// --- configuration check (vdisim/protocol/records.py check_client_config) -------------------

bool power_of_two(uint32_t v) { return v && !(v & (v - 1)); }

bool config_ok(const VDConfig &c) {
    if (c.deviceCount < 1 || c.deviceCount > 64) return false;
    if (c.features & F_SERVER) return false;
    uint32_t model = c.features & ~F_MODEL_OPTIONS & ~F_SERVER;
    if (!(model == 0 || model == 0x1 || model == 0x173 || model == 0x200 || model == 0x201))
        return false;
    if (c.alignment && (!power_of_two(c.alignment) || c.alignment > 65536)) return false;
    if (c.prefixZoneSize > (1u << 20)) return false;
    return true;
}

bool valid_set_name(const char *name) {
    if (!name) return false;
    size_t n = strlen(name);
    return n >= 1 && n <= 255 && !strchr(name, '\\');
}

}  // namespace

// ----------------------------------------------------------------------------- pimpl classes

class CVD {
public:
    CorePtr core;  // the set's core when this device was opened (null: not from OpenDevice)
    CVDS *owner = nullptr;
    int index = -1;
};

class CVDS {
public:
    CVDS() { pthread_mutex_init(&mu, nullptr); }
    ~CVDS() { pthread_mutex_destroy(&mu); }
    CVDS(const CVDS &) = delete;
    CVDS &operator=(const CVDS &) = delete;
    pthread_mutex_t mu;
    CorePtr core;
    std::vector<ClientVirtualDevice *> handed;  // devices returned by OpenDevice, freed at ~

    CorePtr get() {
        Guard g(&mu);
        return core;
    }
};

namespace {

int ret(uint32_t hr) { return (int)hr; }

// The device's core, if the set it came from is still open (else the call acts as in DNE).
CorePtr live_core(CVD *cvd) {
    if (!cvd || !cvd->owner || !cvd->core) return nullptr;
    CorePtr cur = cvd->owner->get();
    return cur == cvd->core ? cur : nullptr;
}

}  // namespace

// ----------------------------------------------------------------------------- ClientVirtualDevice

ClientVirtualDevice::ClientVirtualDevice() : cvd(new CVD()) {}

ClientVirtualDevice::~ClientVirtualDevice() {
    delete cvd;
    cvd = nullptr;
}

int ClientVirtualDevice::GetCommand(time_t timeout, VDC_Command **ppCmd) {
    if (ppCmd) *ppCmd = nullptr;
    CorePtr core = live_core(cvd);
    if (!core) return ret(HR_PROTOCOL);  // interface invalid after Close (section 2.7)
    if (!ppCmd) return ret(HR_INVALID);
    int idx = cvd->index;
    uint32_t hr;
    Outstanding *got_cmd = nullptr;
    uint32_t code = 0, cid = 0;
    {
        Guard g(&core->mu);
        CS st = core->state;
        if (st != CS::ACTIVE) {
            hr = st == CS::ABORT ? HR_ABORT : HR_PROTOCOL;
        } else {
            Dev *dev = &core->devices[idx];
            bool got = core->wait([&] { return dev->close_pending || dev->has_deliverable(); },
                                  deadline_from_ms((int64_t)timeout));
            if (core->state == CS::ABORT || core->state == CS::DNE) {
                hr = HR_ABORT;
            } else if (got && dev->has_deliverable()) {
                CmdFrame f = dev->queue.front();
                dev->queue.pop_front();
                Outstanding *o = new Outstanding();
                o->cmd.commandCode = (int32_t)f.code;
                o->cmd.size = (int32_t)f.size;
                o->cmd.position = (int64_t)f.position;
                o->cmd.buffer = nullptr;
                if (f.buffer_id && core->area && (f.code == VDC_Read || f.code == VDC_Write))
                    o->cmd.buffer = core->area + f.buffer_offset;
                o->cmd_id = f.cmd_id;
                o->device = idx;
                o->buffer_id = f.buffer_id;
                dev->outstanding[f.cmd_id] = o;
                core->by_ptr[&o->cmd] = o;
                got_cmd = o;
                code = f.code;
                cid = f.cmd_id;
                hr = HR_NOERROR;
            } else if (got && dev->close_pending) {
                dev->close_seen = true;
                bool all = true;
                for (auto &d : core->devices) all = all && (d.close_seen || !d.opened);
                if (all) core->state = CS::NORMALLY_TERMINATED;  // section 1.8
                hr = HR_CLOSE;
            } else {
                hr = HR_TIMEOUT;
            }
        }
    }
    if (got_cmd) *ppCmd = &got_cmd->cmd;
    core->report(E_GET_COMMAND, idx, hr, (uint32_t)(timeout & 0xFFFFFFFF), code, cid,
                 got_cmd != nullptr);
    return ret(hr);
}

int ClientVirtualDevice::CompleteCommand(VDC_Command *pCmd, int completionCode,
                                         unsigned long bytesTransferred, int64_t position) {
    CorePtr core = live_core(cvd);
    if (!core) return ret(HR_PROTOCOL);
    int idx = cvd->index;
    uint32_t hr;
    uint32_t cid = 0;
    std::string send;
    uint32_t code = (uint32_t)completionCode;
    {
        Guard g(&core->mu);
        auto it = core->by_ptr.find(pCmd);
        Outstanding *o = it == core->by_ptr.end() ? nullptr : it->second;
        if (o) cid = o->cmd_id;
        CS st = core->state;
        if (st != CS::ACTIVE) {
            hr = st == CS::ABORT ? HR_ABORT : HR_PROTOCOL;
        } else {
            Dev &dev = core->devices[idx];
            if (dev.close_seen) {
                hr = HR_PROTOCOL;  // device no longer open (section 2.5)
            } else if (!o || o->device != idx || bytesTransferred > 0xFFFFFFFFul) {
                hr = HR_INVALID;
            } else {
                hr = HR_NOERROR;
                bool clear = o->cmd.commandCode == VDC_ClearError;
                core->by_ptr.erase(it);
                dev.outstanding.erase(o->cmd_id);
                core->retire(o);
                bool ok = code == W_SUCCESS;
                std::vector<CmdFrame> generated;
                if (dev.state == DS::ACTIVE && !ok) {
                    // FAIL_QUEUED: queued, undelivered commands (but ClearError) get 1117.
                    std::deque<CmdFrame> keep;
                    for (auto &f : dev.queue) {
                        if (f.code == VDC_ClearError)
                            keep.push_back(f);
                        else
                            generated.push_back(f);
                    }
                    dev.queue.swap(keep);
                    dev.state = DS::IO_ERROR;
                } else if (dev.state == DS::IO_ERROR && clear && ok) {
                    dev.state = DS::ACTIVE;
                }
                send = encode_completion((uint16_t)idx, cid, code, (uint32_t)bytesTransferred,
                                         (uint64_t)position, false);
                for (auto &f : generated)
                    send += encode_completion(f.device, f.cmd_id, W_IO_DEVICE, 0, 0, true);
                pthread_cond_broadcast(&core->cond);  // a held ClearError may now be deliverable
            }
        }
    }
    core->report(E_COMPLETE_COMMAND, idx, hr, code, (uint32_t)bytesTransferred, cid, true);
    if (!send.empty() && !core->send_up(send)) core->abort(AR_PEER_DIED, false);
    return ret(hr);
}

// ----------------------------------------------------------------------------- ClientVirtualDeviceSet

ClientVirtualDeviceSet::ClientVirtualDeviceSet() : cvds(new CVDS()) {}

ClientVirtualDeviceSet::~ClientVirtualDeviceSet() {
    if (!cvds) return;
    if (cvds->get()) Close();
    for (ClientVirtualDevice *d : cvds->handed) delete d;
    delete cvds;
    cvds = nullptr;
}

int ClientVirtualDeviceSet::Create(char *name, VDConfig *cfg) {
    if (cvds->get()) return ret(HR_PROTOCOL);
    if (!valid_set_name(name)) return ret(HR_INVALID);
    if (!cfg || !config_ok(*cfg)) return ret(HR_NOTSUPPORTED);
    std::string sname(name);
    std::string key = set_key(sname);
    std::string seg = prefix() + key + "-c";
    std::string rdir;
    if (!runtime_dir(rdir)) return ret(HR_MEMORY);
    std::string sock_path = rdir + "/" + key + ".sock";
    if (sock_path.size() >= sizeof(((struct sockaddr_un *)nullptr)->sun_path)) return ret(HR_MEMORY);
    remove_if_dead(seg);  // a dead owner's set may be replaced (stale objects)
    int fd = shm_open(("/" + seg).c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) return ret(errno == EEXIST ? HR_ALREADY_EXISTS : HR_MEMORY);
    fchmod(fd, 0600);  // whatever the umask (the Microsoft sample sets umask(0))
    void *map = MAP_FAILED;
    if (flock(fd, LOCK_SH) != 0 || posix_fallocate(fd, 0, CONTROL_SIZE) != 0
        || (map = mmap(nullptr, CONTROL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0))
               == MAP_FAILED) {
        shm_unlink(("/" + seg).c_str());
        ::close(fd);
        return ret(HR_MEMORY);
    }
    CorePtr core = std::make_shared<Core>();
    core->name = sname;
    core->key = key;
    core->requested = *cfg;
    core->control_fd = fd;
    core->control_map = map;
    core->control_name = seg;
    if (getrandom(core->token, TOKEN_SIZE, 0) != (ssize_t)TOKEN_SIZE) {
        core->shutdown_all();
        return ret(HR_MEMORY);
    }
    // The control segment (docs/wire.md): header <4sHHIIQ16s44sII>, name @128, instance @512.
    std::string h("VDSC", 4);
    put16(h, 1);
    put16(h, 0);
    put32(h, (uint32_t)getpid());
    put32(h, (uint32_t)geteuid());
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    put64(h, (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec);
    h.append((const char *)core->token, TOKEN_SIZE);
    h.append((const char *)cfg, sizeof(VDConfig));
    put32(h, (uint32_t)sname.size());
    put32(h, 11);
    unsigned char *c = (unsigned char *)map;
    memcpy(c + NAME_OFFSET, sname.data(), sname.size());
    memcpy(c + INSTANCE_OFFSET, "MSSQLSERVER", 11);
    memcpy(c, h.data(), h.size());
    // The control socket: bound, then chmod 0600, then listen with backlog 128.
    if (access(sock_path.c_str(), F_OK) == 0) {
        if (socket_alive(sock_path)) {
            core->shutdown_all();
            return ret(HR_ALREADY_EXISTS);
        }
        unlink(sock_path.c_str());
    }
    int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, sock_path.c_str(), sizeof a.sun_path - 1);
    // Mode 0600 is set between bind and listen (nobody can connect before listen); the
    // umask is per process, so changing it here would race with the client's other threads.
    int brc = ls >= 0 ? bind(ls, (struct sockaddr *)&a, sizeof a) : -1;
    if (brc != 0 || chmod(sock_path.c_str(), 0600) != 0 || listen(ls, 128) != 0) {
        if (ls >= 0) ::close(ls);
        if (brc == 0) unlink(sock_path.c_str());
        core->shutdown_all();
        return ret(HR_MEMORY);
    }
    core->listener = ls;
    core->socket_path = sock_path;
    if (pipe2(core->wake, O_CLOEXEC | O_NONBLOCK) != 0
        || pthread_create(&core->hub, nullptr, Core::hub_main, core.get()) != 0) {
        core->shutdown_all();
        return ret(HR_MEMORY);
    }
    core->hub_started = true;
    {
        Guard g(&cvds->mu);
        cvds->core = core;
    }
    core->report(E_CREATE, -1, HR_NOERROR, cfg->deviceCount, cfg->features);
    return ret(HR_NOERROR);
}

int ClientVirtualDeviceSet::GetConfiguration(time_t timeout, VDConfig *cfg) {
    CorePtr core = cvds->get();
    if (!core) return ret(HR_PROTOCOL);
    if (!cfg) return ret(HR_INVALID);
    uint32_t hr;
    {
        Guard g(&core->mu);
        CS st = core->state;
        if (st == CS::CONFIGURABLE) {
            bool got = core->wait([&] { return core->configured; },
                                  deadline_from_ms((int64_t)timeout));
            if (core->state == CS::ABORT || core->state == CS::DNE) {
                hr = HR_ABORT;
                if (core->state == CS::CONFIGURABLE) core->state = CS::ABORT;
            } else if (got && core->configured) {
                hr = HR_NOERROR;
                if (core->state == CS::CONFIGURABLE) core->state = CS::INITIALIZING;
            } else {
                hr = HR_TIMEOUT;
            }
        } else if (st == CS::ABORT) {
            hr = HR_ABORT;
        } else if (st == CS::DNE) {
            hr = HR_PROTOCOL;
        } else {
            hr = HR_NOERROR;
        }
        if (hr == HR_NOERROR) *cfg = core->config;
    }
    core->report(E_GET_CONFIGURATION, -1, hr, (uint32_t)(timeout & 0xFFFFFFFF));
    return ret(hr);
}

int ClientVirtualDeviceSet::OpenDevice(char *name, ClientVirtualDevice **ppVirtualDevice) {
    if (ppVirtualDevice) *ppVirtualDevice = nullptr;
    CorePtr core = cvds->get();
    if (!core) return ret(HR_PROTOCOL);
    uint32_t hr;
    int index = -1;
    {
        Guard g(&core->mu);
        CS st = core->state;
        if (st == CS::INITIALIZING || st == CS::ACTIVE) {
            Dev *dev = nullptr;
            if (name)
                for (auto &d : core->devices)
                    if (d.name == name) dev = &d;
            bool all_open = !core->devices.empty();
            for (auto &d : core->devices) all_open = all_open && d.opened;
            if (!dev) {
                hr = all_open ? HR_OPEN : HR_INVALID;
            } else if (dev->opened) {
                hr = all_open ? HR_OPEN : HR_PROTOCOL;
            } else if (!ppVirtualDevice) {
                hr = HR_INVALID;
            } else {
                dev->opened = dev->opened_here = true;
                index = dev->index;
                hr = HR_NOERROR;
                core->state = CS::ACTIVE;
            }
        } else {
            hr = st == CS::ABORT ? HR_ABORT : HR_PROTOCOL;
        }
    }
    if (index >= 0) {
        ClientVirtualDevice *d = new ClientVirtualDevice();
        d->cvd->core = core;
        d->cvd->owner = cvds;
        d->cvd->index = index;
        {
            Guard g(&cvds->mu);
            cvds->handed.push_back(d);
        }
        *ppVirtualDevice = d;
    }
    core->report(E_OPEN_DEVICE, index, hr);
    return ret(hr);
}

int ClientVirtualDeviceSet::SignalAbort() {
    CorePtr core = cvds->get();
    if (!core) return ret(HR_PROTOCOL);
    uint32_t hr;
    {
        Guard g(&core->mu);
        hr = core->state == CS::DNE ? HR_PROTOCOL : HR_NOERROR;
    }
    core->report(E_SIGNAL_ABORT, -1, hr);
    core->abort(AR_CLIENT_SIGNAL_ABORT, true);
    return ret(hr);
}

int ClientVirtualDeviceSet::Close() {
    CorePtr core = cvds->get();
    if (!core) return ret(HR_PROTOCOL);
    bool devices_open = false;
    uint32_t hr;
    {
        Guard g(&core->mu);
        CS st = core->state;
        if (st == CS::ACTIVE)
            for (auto &d : core->devices)
                devices_open = devices_open || (d.opened_here && !d.close_seen);
        hr = st == CS::DNE ? HR_PROTOCOL : devices_open ? HR_OPEN : HR_NOERROR;
    }
    // VD_E_OPEN: signal abort first, and still release everything (section 2.7).
    if (devices_open) core->abort(AR_CLIENT_CLOSE_WITH_DEVICES_OPEN, true);
    core->report(E_CLOSE, -1, hr);
    {
        Guard g(&cvds->mu);
        cvds->core = nullptr;
    }
    core->shutdown_all();
    return ret(hr);
}

int ClientVirtualDeviceSet::OpenInSecondary(char *setName) {
    (void)setName;
    // Secondaries are not implemented by this library: VD_E_PROTOCOL is the documented answer
    // for "no set ready for secondaries" (section 2.8).  On an open object: VD_E_PROTOCOL too.
    logf("OpenInSecondary is not implemented by vdisim's libsqlvdi.so");
    return ret(HR_PROTOCOL);
}

int ClientVirtualDeviceSet::GetBufferHandle(uint8_t *pBuffer, unsigned int *pBufferHandle) {
    CorePtr core = cvds->get();
    if (!core) return ret(HR_PROTOCOL);
    uint32_t hr;
    uint32_t handle = 0;
    {
        Guard g(&core->mu);
        CS st = core->state;
        bool ok = false;
        if (pBuffer && pBufferHandle)
            for (auto &kv : core->by_ptr)
                if (kv.second->buffer_id && kv.first->buffer == pBuffer) {
                    ok = true;
                    handle = kv.second->buffer_id;
                }
        if (st == CS::DNE)
            hr = HR_PROTOCOL;
        else if (st == CS::CONFIGURABLE || !ok)
            hr = HR_INVALID;  // no buffers exist yet / not a command's buffer
        else
            hr = HR_NOERROR;
        if (hr != HR_NOERROR) handle = 0;
    }
    if (hr == HR_NOERROR) *pBufferHandle = handle;
    core->report(E_GET_BUFFER_HANDLE, -1, hr, handle);
    return ret(hr);
}

int ClientVirtualDeviceSet::MapBufferHandle(int dwBuffer, uint8_t **ppBuffer) {
    if (ppBuffer) *ppBuffer = nullptr;
    CorePtr core = cvds->get();
    if (!core) return ret(HR_PROTOCOL);
    uint32_t hr;
    uint8_t *p = nullptr;
    {
        Guard g(&core->mu);
        CS st = core->state;
        uint64_t off = 0;
        uint32_t size = 0;
        bool ok = ppBuffer && core->descriptor((uint32_t)dwBuffer, off, size)
                  && off + size <= core->area_map_size;
        if (st == CS::DNE)
            hr = HR_PROTOCOL;
        else if (st == CS::CONFIGURABLE || !ok)
            hr = HR_INVALID;
        else {
            hr = HR_NOERROR;
            p = core->area + off;
        }
    }
    if (p) *ppBuffer = p;
    core->report(E_MAP_BUFFER_HANDLE, -1, hr, (uint32_t)dwBuffer);
    return ret(hr);
}

void ClientVirtualDeviceSet::RegisterDeviceClosed() {
    // Declared by the Linux header, undocumented (section 2.10): nothing to do here.
}
