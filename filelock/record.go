package filelock

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"
)

// Layout of a lock file. Byte 0 is the byte that is locked on Windows, where
// locks are mandatory; everything that other processes read lives after it.
//
//	[16:24)  token    uint64, little endian: the last token handed out
//	[24:32)  since    int64, Unix nanoseconds when the holder acquired
//	[32:36)  length   uint32 of the holder record; 0 = no exclusive holder
//	[36:40)  crc      CRC-32 (IEEE) of bytes [16:36) and the record
//	[40:…)   record   opaque bytes given by the holder
const (
	hdrOff       = 16
	hdrLen       = 24
	lenOff       = hdrOff + 16
	recOff       = hdrOff + hdrLen
	MaxRecordLen = 16 << 10
)

// encodeHeader appends the header and record to buf and returns it.
func encodeHeader(buf []byte, token uint64, since time.Time, rec []byte) []byte {
	start := len(buf)
	buf = binary.LittleEndian.AppendUint64(buf, token)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(since.UnixNano()))
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(rec)))
	crc := crc32.Update(0, crc32.IEEETable, buf[start:])
	crc = crc32.Update(crc, crc32.IEEETable, rec)
	buf = binary.LittleEndian.AppendUint32(buf, crc)
	return append(buf, rec...)
}

// header is what a reader found in a lock file.
type header struct {
	token  uint64
	since  time.Time
	record []byte // nil when no exclusive holder record is present
}

// decodeHeader parses bytes read from offset hdrOff. A short read or a zero
// length is "no record"; a CRC mismatch (a write in progress, or garbage) is
// an error so that the caller can read again.
func decodeHeader(b []byte) (header, error) {
	var h header
	if len(b) >= 8 {
		h.token = binary.LittleEndian.Uint64(b)
	}
	if len(b) < hdrLen {
		return h, nil
	}
	n := binary.LittleEndian.Uint32(b[16:])
	if n == 0 {
		return h, nil
	}
	if n > MaxRecordLen || int(n) > len(b)-hdrLen {
		return h, fmt.Errorf("holder record: length %d out of range", n)
	}
	rec := b[hdrLen : hdrLen+int(n)]
	crc := crc32.Update(0, crc32.IEEETable, b[:20])
	crc = crc32.Update(crc, crc32.IEEETable, rec)
	if crc != binary.LittleEndian.Uint32(b[20:]) {
		return h, fmt.Errorf("holder record: checksum mismatch")
	}
	h.since = time.Unix(0, int64(binary.LittleEndian.Uint64(b[8:])))
	h.record = rec
	return h, nil
}
