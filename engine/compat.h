/* SPDX-License-Identifier: MIT */
/*
 * What the kernel has that the oldest liburing kvring builds with (2.3),
 * or an older C library, does not name. Each definition is the kernel's ABI value; whether the
 * running kernel honours it is found out at run time where it is used.
 */
#ifndef KVR_COMPAT_H
#define KVR_COMPAT_H

#include <liburing.h>

/* SEND_ZC/SENDMSG_ZC (sqe->ioprio): report in the notification whether the
 * kernel had to copy the data after all (kernel 6.2). */
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
/* Notification CQE res bit: the zero-copy send was copied. */
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

/* madvise: fault pages in writable without writing them (kernel 5.14; C
 * libraries before glibc 2.35 do not name it). */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#endif
