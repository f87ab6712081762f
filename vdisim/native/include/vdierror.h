/*
 * vdierror.h -- VDI return codes, written for vdisim from the published values
 * (spec vdi-spec.md section 7; live-mode.md section 1.5).  Not Microsoft's header.
 *
 * Every VDI error is MAKE_HRESULT(1, 0x77, code): 0x8077xxxx.  The Linux API returns them as
 * a signed int, so they are negative there: compare with these constants (which are int), or
 * mask with 0xFFFFFFFF before comparing with unsigned literals.
 */
#ifndef VDISIM_VDIERROR_H
#define VDISIM_VDIERROR_H

#ifndef MAKE_HRESULT
#define MAKE_HRESULT(sev, fac, code) \
    ((int)(((unsigned int)(sev) << 31) | ((unsigned int)(fac) << 16) | ((unsigned int)(code))))
#endif

#define VD_ERROR(code) MAKE_HRESULT(1, 0x77, code)

#ifndef NOERROR
#define NOERROR 0
#endif

#define VD_E_NOTOPEN        VD_ERROR(2)   /* 0x80770002 object was not open */
#define VD_E_TIMEOUT        VD_ERROR(3)   /* 0x80770003 the wait timed out */
#define VD_E_ABORT          VD_ERROR(4)   /* 0x80770004 abort: only termination is possible */
#define VD_E_SECURITY       VD_ERROR(5)   /* 0x80770005 security environment failed */
#define VD_E_INVALID        VD_ERROR(6)   /* 0x80770006 invalid parameter */
#define VD_E_INSTANCE_NAME  VD_ERROR(7)   /* 0x80770007 instance name not recognised */
#define VD_E_NOTSUPPORTED   VD_ERROR(9)   /* 0x80770009 configuration not supported */
#define VD_E_MEMORY         VD_ERROR(10)  /* 0x8077000A out of memory */
#define VD_E_UNEXPECTED     VD_ERROR(11)  /* 0x8077000B unexpected internal error */
#define VD_E_PROTOCOL       VD_ERROR(12)  /* 0x8077000C call not valid in this state */
#define VD_E_OPEN           VD_ERROR(13)  /* 0x8077000D all devices are open */
#define VD_E_CLOSE          VD_ERROR(14)  /* 0x8077000E the device is now closed */
#define VD_E_BUSY           VD_ERROR(15)  /* 0x8077000F resource busy */

#endif /* VDISIM_VDIERROR_H */
