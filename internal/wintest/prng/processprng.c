/*
 * bcryptprimitives.dll for Wine 8.0, which lacks ProcessPrng: Go's runtime
 * (1.24 and later) loads it from the system directory at start-up and
 * cannot run without it. Random bytes come from advapi32's
 * SystemFunction036 (RtlGenRandom), which Wine has. Tests only.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buf, ULONG len);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
	while (len > 0) {
		ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
		if (!SystemFunction036(data, n))
			return FALSE;
		data += n;
		len -= n;
	}
	return TRUE;
}
