/*
 * vdi.h -- the Linux SQL Server Virtual Device Interface (VDI) client API, as vdisim's
 * libsqlvdi.so implements it.
 *
 * Written for vdisim from the published interface facts (spec vdi-spec.md sections 2, 4, 5, 6
 * and live-mode.md section 1.4): two plain C++ classes without virtual functions, each holding
 * one pointer; structures with the documented layouts; return codes in vdierror.h.  It is not
 * Microsoft's header, but a program written against the Linux VDI interface compiles against it
 * and links to the same (Itanium-mangled) symbols.
 */
#ifndef VDISIM_VDI_H
#define VDISIM_VDI_H

#include <stdint.h>
#include <time.h>

#include "vdierror.h"

extern "C" {

#pragma pack(push, 8)

/* VDConfig (section 4.1): eleven 32-bit fields, 44 bytes. */
struct VDConfig {
    uint32_t deviceCount;           /* client: 1..64 */
    uint32_t features;              /* client: VDF_* request; server adds direction bits */
    uint32_t prefixZoneSize;        /* client */
    uint32_t alignment;             /* client */
    uint32_t softFileMarkBlockSize; /* client (tape-like only) */
    uint32_t EOMWarningSize;        /* client */
    uint32_t serverTimeOut;         /* client, milliseconds, 0 = infinite */
    uint32_t blockSize;             /* server */
    uint32_t maxIODepth;            /* server (deprecated, 4) */
    uint32_t maxTransferSize;       /* server */
    uint32_t bufferAreaSize;        /* server */
};

/* VDC_Command (section 6.1): 24 bytes on x86-64.  Read-only for the client. */
struct VDC_Command {
    int32_t commandCode;
    int32_t size;
    int64_t position;
    uint8_t *buffer;
};

#pragma pack(pop)

/* Feature bits (section 5). */
enum VDFeatures {
    VDF_Removable = 0x1,
    VDF_Rewind = 0x02,
    VDF_Position = 0x10,
    VDF_SkipBlocks = 0x20,
    VDF_ReversePosition = 0x40,
    VDF_Discard = 0x80,
    VDF_FileMarks = 0x100,
    VDF_RandomAccess = 0x200,
    VDF_SnapshotPrepare = 0x400,
    VDF_EnumFrozenFiles = 0x800,
    VDF_VSSWriter = 0x1000,
    VDF_RequestComplete = 0x2000,
    VDF_WriteMedia = 0x10000,
    VDF_ReadMedia = 0x20000,
    VDF_CompleteEnabled = 0x40000,
    VDF_LatchStats = (int)0x80000000,
    VDF_LikePipe = 0,
    VDF_LikeTape = VDF_FileMarks | VDF_Removable | VDF_Rewind | VDF_Position | VDF_SkipBlocks
                   | VDF_ReversePosition,
    VDF_LikeDisk = VDF_RandomAccess
};

/* Command codes (section 6.2). */
enum VDCommands {
    VDC_Read = 1,
    VDC_Write = 2,
    VDC_ClearError = 3,
    VDC_Rewind = 4,
    VDC_WriteMark = 5,
    VDC_SkipMarks = 6,
    VDC_SkipBlocks = 7,
    VDC_Load = 8,
    VDC_GetPosition = 9,
    VDC_SetPosition = 10,
    VDC_Discard = 11,
    VDC_Flush = 12,
    VDC_Snapshot = 13,
    VDC_MountSnapshot = 14,
    VDC_PrepareToFreeze = 15,
    VDC_FileInfoBegin = 16,
    VDC_FileInfoEnd = 17,
    VDC_GetError = 18,
    VDC_Complete = 19
};

enum VDWhence { VDC_Beginning = 0, VDC_Current = 1, VDC_End = 2 };

/* The Win32 completion codes the Linux header defines (section 10). */
#ifndef ERROR_SUCCESS
#define ERROR_SUCCESS 0
#endif
#ifndef ERROR_ARENA_TRASHED
#define ERROR_ARENA_TRASHED 7
#endif
#ifndef ERROR_HANDLE_EOF
#define ERROR_HANDLE_EOF 38
#endif
#ifndef ERROR_HANDLE_DISK_FULL
#define ERROR_HANDLE_DISK_FULL 39
#endif
#ifndef ERROR_NOT_SUPPORTED
#define ERROR_NOT_SUPPORTED 50
#endif
#ifndef ERROR_DISK_FULL
#define ERROR_DISK_FULL 112
#endif
#ifndef ERROR_OPERATION_ABORTED
#define ERROR_OPERATION_ABORTED 995
#endif

class CVDS;
class CVD;

/* One device of a set.  Objects returned by OpenDevice belong to the set: never delete them. */
class ClientVirtualDevice {
public:
    ClientVirtualDevice();
    ~ClientVirtualDevice();
    /* timeout in milliseconds; negative waits forever; 0 polls. */
    int GetCommand(time_t timeout, VDC_Command **ppCmd);
    int CompleteCommand(VDC_Command *pCmd, int completionCode, unsigned long bytesTransferred,
                        int64_t position);

private:
    CVD *cvd;
    friend class ClientVirtualDeviceSet;
};

/* A virtual device set (the primary client's object). */
class ClientVirtualDeviceSet {
public:
    ClientVirtualDeviceSet();
    ~ClientVirtualDeviceSet();
    int Create(char *name, VDConfig *cfg);
    int GetConfiguration(time_t timeout, VDConfig *cfg);
    int OpenDevice(char *name, ClientVirtualDevice **ppVirtualDevice);
    int Close();
    int SignalAbort();
    int OpenInSecondary(char *setName);
    int GetBufferHandle(uint8_t *pBuffer, unsigned int *pBufferHandle);
    int MapBufferHandle(int dwBuffer, uint8_t **ppBuffer);
    void RegisterDeviceClosed();

private:
    CVDS *cvds;
};

} /* extern "C" */

#endif /* VDISIM_VDI_H */
