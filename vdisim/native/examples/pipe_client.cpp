// pipe_client.cpp -- a native VDI backup/restore client written to the Linux VDI interface the
// way Microsoft's Linux pipe sample works: it creates a virtual device set, runs the BACKUP or
// RESTORE statement by shelling out to `sqlcmd -Q "..."` on a second thread, and moves the data
// between the device and a file.  Nothing in it knows about vdisim: built against vdi.h and
// linked with -lsqlvdi, it runs against SQL Server's libsqlvdi.so or vdisim's (LD_LIBRARY_PATH)
// and whatever `sqlcmd` is first on PATH.
//
// usage: pipe_client B|R <database> <file> [-S server] [-U user] [-P password]
//                    [-N set-name] [-Q statement] [-T getcommand-timeout-ms]
//   B: BACKUP DATABASE <database> to <file>;  R: RESTORE DATABASE <database> from <file>.
//   -N / -Q use a given set name and statement instead (the client harness passes its own);
//   the statement names the set with VIRTUAL_DEVICE = '<set-name>'.
// Exit status 0 when both the transfer and the statement succeeded.

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "vdi.h"
#include "vdierror.h"

struct SqlJob {
    std::string command;
    int status = -1;
    volatile bool finished = false;
};

// The statement runs on its own thread: it only returns when the transfer is over.
static void *run_sqlcmd(void *arg) {
    SqlJob *job = (SqlJob *)arg;
    FILE *p = popen(job->command.c_str(), "r");
    if (!p) {
        perror("popen");
        return nullptr;
    }
    char line[1024];
    while (fgets(line, sizeof line, p)) fprintf(stderr, "sqlcmd: %s", line);
    int rc = pclose(p);
    job->status = WIFEXITED(rc) ? WEXITSTATUS(rc) : 255;
    __sync_synchronize();
    job->finished = true;
    return nullptr;
}

static std::string new_set_name() {
    unsigned char r[16];
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(r, 1, sizeof r, f) != sizeof r) {
        for (int i = 0; i < 16; i++) r[i] = (unsigned char)(rand() ^ getpid() ^ i);
    }
    if (f) fclose(f);
    char buf[64];
    snprintf(buf, sizeof buf,
             "{%02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-%02X%02X%02X%02X%02X%02X}", r[0],
             r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13],
             r[14], r[15]);
    return buf;
}

static std::string shell_quote(const std::string &s) {
    std::string out = "'";
    for (char c : s) {
        if (c == '\'')
            out += "'\\''";
        else
            out += c;
    }
    return out + "'";
}

// Serve the device until the server closes it.  Returns 0 on a clean end.
static int transfer(ClientVirtualDevice *dev, FILE *file, bool backup, long timeout_ms) {
    for (;;) {
        VDC_Command *cmd = nullptr;
        int hr = dev->GetCommand(timeout_ms, &cmd);  // milliseconds
        if (hr == VD_E_TIMEOUT) continue;
        if (hr == VD_E_CLOSE) return 0;  // normal end of the device
        if (hr != NOERROR) {
            fprintf(stderr, "pipe_client: GetCommand failed: 0x%08X\n", (unsigned)hr);
            return 1;
        }
        int code = ERROR_SUCCESS;
        unsigned long done = 0;
        switch (cmd->commandCode) {
        case VDC_Write:
            done = fwrite(cmd->buffer, 1, (size_t)cmd->size, file);
            if (done != (unsigned long)cmd->size) code = ERROR_DISK_FULL;
            break;
        case VDC_Read:
            done = fread(cmd->buffer, 1, (size_t)cmd->size, file);
            if (done != (unsigned long)cmd->size) code = ferror(file) ? ERROR_NOT_SUPPORTED
                                                                   : ERROR_HANDLE_EOF;
            break;
        case VDC_Flush:
            if (fflush(file) != 0) code = ERROR_DISK_FULL;
            break;
        case VDC_ClearError:
        case VDC_Complete:
            break;
        default:
            code = ERROR_NOT_SUPPORTED;
        }
        (void)backup;
        hr = dev->CompleteCommand(cmd, code, done, 0);
        if (hr != NOERROR) {
            fprintf(stderr, "pipe_client: CompleteCommand failed: 0x%08X\n", (unsigned)hr);
            return 1;
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 4 || (strcmp(argv[1], "B") != 0 && strcmp(argv[1], "R") != 0)) {
        fprintf(stderr, "usage: %s B|R <database> <file> [-S server] [-U user] [-P password]\n",
                argv[0]);
        return 2;
    }
    bool backup = argv[1][0] == 'B';
    std::string db = argv[2], path = argv[3], server = "localhost", user = "sa", password;
    std::string name, sql;
    long timeout_ms = 60000;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-S")) server = argv[i + 1];
        else if (!strcmp(argv[i], "-U")) user = argv[i + 1];
        else if (!strcmp(argv[i], "-P")) password = argv[i + 1];
        else if (!strcmp(argv[i], "-N")) name = argv[i + 1];
        else if (!strcmp(argv[i], "-Q")) sql = argv[i + 1];
        else if (!strcmp(argv[i], "-T")) timeout_ms = atol(argv[i + 1]);
    }
    if (password.empty() && getenv("SQLCMDPASSWORD")) password = getenv("SQLCMDPASSWORD");

    FILE *file = fopen(path.c_str(), backup ? "wb" : "rb");
    if (!file) {
        fprintf(stderr, "pipe_client: %s: %s\n", path.c_str(), strerror(errno));
        return 2;
    }

    umask(0);  // as the Microsoft sample: let the server's group reach our shared memory
    if (name.empty()) name = new_set_name();
    ClientVirtualDeviceSet *vds = new ClientVirtualDeviceSet();
    VDConfig config;
    memset(&config, 0, sizeof config);
    config.deviceCount = 1;
    int hr = vds->Create((char *)name.c_str(), &config);
    if (hr != NOERROR) {
        fprintf(stderr, "pipe_client: Create failed: 0x%08X\n", (unsigned)hr);
        delete vds;
        return 1;
    }

    if (sql.empty())
        sql = backup ? "BACKUP DATABASE [" + db + "] TO VIRTUAL_DEVICE = '" + name
                                   + "' WITH FORMAT, COPY_ONLY"
                             : "RESTORE DATABASE [" + db + "] FROM VIRTUAL_DEVICE = '" + name
                                   + "' WITH REPLACE";
    SqlJob job;
    job.command = "sqlcmd -S " + shell_quote(server) + " -U " + shell_quote(user) + " -P "
                  + shell_quote(password) + " -C -b -Q " + shell_quote(sql);
    pthread_t thread;
    pthread_create(&thread, nullptr, run_sqlcmd, &job);

    int failed = 0;
    // Wait for the server in slices, watching the statement: if it fails before it opens the
    // set, GetConfiguration would only ever time out.
    for (int waited = 0;; waited += 1000) {
        hr = vds->GetConfiguration(1000, &config);
        if (hr != VD_E_TIMEOUT || job.finished || waited >= 60000) break;
    }
    if (hr != NOERROR) {
        fprintf(stderr, "pipe_client: GetConfiguration failed: 0x%08X\n", (unsigned)hr);
        vds->SignalAbort();
        failed = 1;
    } else {
        ClientVirtualDevice *dev = nullptr;
        hr = vds->OpenDevice((char *)name.c_str(), &dev);
        if (hr != NOERROR) {
            fprintf(stderr, "pipe_client: OpenDevice failed: 0x%08X\n", (unsigned)hr);
            vds->SignalAbort();
            failed = 1;
        } else {
            failed = transfer(dev, file, backup, timeout_ms);
            if (failed) vds->SignalAbort();
        }
    }
    vds->Close();
    pthread_join(thread, nullptr);
    delete vds;
    fclose(file);
    if (job.status != 0) {
        fprintf(stderr, "pipe_client: the statement failed (sqlcmd exit %d)\n", job.status);
        failed = 1;
    }
    if (!failed) fprintf(stderr, "pipe_client: %s of %s done\n", backup ? "backup" : "restore",
                         db.c_str());
    return failed;
}
