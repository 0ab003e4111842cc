#!/usr/bin/env python3
"""Writes the generated part of the seed corpus: FUSE request sequences
(binary, <linux/fuse.h> layouts), control requests and daemon
configurations. The kernel file seeds are captured text, checked in as
they are. Run from anywhere; rewrites only the files it names."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = 4096
ROOT = 1


def write(target, name, data):
    path = os.path.join(HERE, "corpus", target, name)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# --- FUSE: fuse_in_header is len, opcode, unique, nodeid, uid, gid, pid,
# total_extlen, padding (40 bytes).
LOOKUP, FORGET, GETATTR, SETATTR, OPEN, READ, WRITE, STATFS, RELEASE = 1, 2, 3, 4, 14, 15, 16, 17, 18
FSYNC, FLUSH, INIT, INTERRUPT, DESTROY, BATCH_FORGET, FALLOCATE = 20, 25, 26, 36, 38, 42, 43
unique = 0


def req(opcode, body=b"", nodeid=ROOT):
    global unique
    unique += 2
    return struct.pack("<IIQQIIIHH", 40 + len(body), opcode, unique, nodeid, 0, 0, 1, 0, 0) + body


def init(major=7, minor=38, flags=0x1 | 0x8 | 0x40000000, flags2=0):
    return req(INIT, struct.pack("<IIIII", major, minor, 131072, flags & 0xFFFFFFFF, flags2) + bytes(44))


def read(offset, size):
    return req(READ, struct.pack("<QQIIQII", 1, offset, size, 0, 0, 0, 0))


def write_(offset, data):
    return req(WRITE, struct.pack("<QQIIQII", 1, offset, len(data), 0, 0, 0, 0) + data)


def fallocate(offset, length, mode):
    return req(FALLOCATE, struct.pack("<QQQII", 1, offset, length, mode, 0))


page_a = bytes(range(256)) * 16
page_same = b"\x5a" * PAGE
write("fuse_server", "init", init())
write("fuse_server", "init-newer-major", init(major=8))
write("fuse_server", "init-io-uring", init(flags=0x1 | 0x80000000, flags2=1 << 9))
write("fuse_server", "open-getattr-statfs",
      init() + req(GETATTR, struct.pack("<IIQ", 0, 0, 1)) + req(OPEN, struct.pack("<II", 2, 0)) + req(STATFS))
write("fuse_server", "write-read", init() + write_(PAGE, page_a) + read(PAGE, PAGE) + read(0, 2 * PAGE))
write("fuse_server", "write-same-filled-punch",
      init() + write_(3 * PAGE, page_same) + fallocate(3 * PAGE, PAGE, 0x1 | 0x2) + read(3 * PAGE, PAGE))
write("fuse_server", "zero-range-and-prealloc", init() + fallocate(0, 8 * PAGE, 0x10) + fallocate(0, PAGE, 0))
write("fuse_server", "setattr-size",
      init() + req(SETATTR, struct.pack("<IIQQQQQQIIIIIIII", 1 << 3, 0, 1, 64 * PAGE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)))
write("fuse_server", "unaligned-and-past-end",
      init() + read(100, PAGE) + write_(64 * PAGE, page_a) + fallocate(2 ** 64 - PAGE, 2 * PAGE, 0x3))
write("fuse_server", "directory-ops-forget-flush",
      init() + req(LOOKUP, b"name\0") + req(FORGET, struct.pack("<Q", 1)) + req(FLUSH, bytes(24))
      + req(FSYNC, bytes(16)) + req(RELEASE, bytes(24)) + req(INTERRUPT, struct.pack("<Q", 2)) + req(DESTROY))
write("fuse_server", "short-header", b"\x10\x00\x00\x00\x1a\x00")
write("fuse_server", "unknown-opcode", init() + req(9999, b"x" * 12))

# --- NBD: one connection's byte stream from the client (big-endian).
IHAVEOPT, REQ_MAGIC = 0x49484156454F5054, 0x25609513
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO, OPT_SR, OPT_META = 1, 2, 3, 6, 7, 8, 10
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_ZEROES = 0, 1, 2, 3, 4, 6
nbd_cookie = 0


def nbd_flags(flags=3):
    return struct.pack(">I", flags)


def nbd_opt(opt, data=b""):
    return struct.pack(">QII", IHAVEOPT, opt, len(data)) + data


def nbd_go(name=b"", infos=(3,), opt=OPT_GO):
    return nbd_opt(opt, struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos))
                   + b"".join(struct.pack(">H", i) for i in infos))


def nbd_req(cmd, offset, length, flags=0, payload=b""):
    global nbd_cookie
    nbd_cookie += 1
    return struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, nbd_cookie, offset, length) + payload


nbd_page = bytes(range(256)) * 16
write("nbd_server", "go-write-read", nbd_flags() + nbd_go() + nbd_req(CMD_WRITE, PAGE, PAGE, 0, nbd_page)
      + nbd_req(CMD_READ, 0, 2 * PAGE) + nbd_req(CMD_FLUSH, 0, 0) + nbd_req(CMD_DISC, 0, 0))
write("nbd_server", "structured-trim-zeroes",
      nbd_flags() + nbd_opt(OPT_SR) + nbd_go(b"swap", (1, 2, 3)) + nbd_req(CMD_WRITE, 0, 2 * PAGE, 1, nbd_page * 2)
      + nbd_req(CMD_TRIM, 0, PAGE) + nbd_req(CMD_ZEROES, PAGE, PAGE, 2) + nbd_req(CMD_ZEROES, 2 * PAGE, PAGE)
      + nbd_req(CMD_READ, 0, 4 * PAGE))
write("nbd_server", "list-info-abort", nbd_flags() + nbd_opt(OPT_LIST) + nbd_go(b"swap", (), OPT_INFO)
      + nbd_go(b"nope") + nbd_opt(OPT_META, b"x" * 8) + nbd_opt(OPT_ABORT))
write("nbd_server", "export-name", nbd_flags(1) + nbd_opt(OPT_EXPORT_NAME, b"swap") + nbd_req(CMD_READ, 0, PAGE))
write("nbd_server", "bad-requests",
      nbd_flags() + nbd_go() + nbd_req(CMD_READ, 100, PAGE) + nbd_req(CMD_WRITE, 64 * PAGE, PAGE, 0, nbd_page)
      + nbd_req(CMD_READ, 0, 1 << 30) + nbd_req(99, 0, PAGE) + nbd_req(CMD_TRIM, 0, PAGE, 0x8000)
      + nbd_req(CMD_WRITE, 0, 1 << 30))
write("nbd_server", "bad-magic", nbd_flags() + nbd_go() + b"\x00" * 28)
write("nbd_server", "oldstyle-client", nbd_flags(0))
write("nbd_server", "huge-option", nbd_flags() + struct.pack(">QII", IHAVEOPT, OPT_GO, 0xFFFFFFFF))

# --- Control requests, as uzswapctl and scripts send them, and not.
for name, line in {
    "status": '{"cmd":"status"}',
    "cgroups": '{"cmd":"cgroups"}',
    "stats": '{"cmd": "stats"}',
    "set": '{"cmd":"set","key":"cgroup-max","value":"/batch.slice=512M"}',
    "writeback": '{"cmd":"writeback","pages":10000,"cgroup":"/user.slice/\\"x\\"\\n"}',
    "attribute": '{"cmd":"attribute"}',
    "malformed": '{"cmd":"writeback","pages":-1,"cgroup":7}',
    "not-json": '\x00\xff garbage',
    "status-json": '{"name":"uzswap","device":{"file":"/run/uzswap/uzswap/swap","loop":"/dev/loop0","swap_on":true},'
                   '"stored_pages":10,"cgroups":[{"path":"/a\\\\xff\\"q\\\\n","stored_pages":5,"writeback":false,'
                   '"max_bytes":1048576}],"reclaim":{"enabled":true,"nodes":[{"node":0,"share_bytes":100,'
                   '"watermarks":{"low":10,"high":20},"wakeups":{"psi":1,"idle":0}}]}}',
}.items():
    write("control_request", name, line)

# --- Daemon configuration: the file, then NUL-separated flags.
write("daemon_config", "example",
      "# uzswapd.conf\nname = uzswap\nsize = 4G\ncompressor = zstd\nlevel = 3\nmax-pool-percent = 25\n"
      "backing-file = /var/lib/uzswap/backing.swap\nwatermark-scale-factor = 500\npsi-stall-ms = 100\n")
write("daemon_config", "toml", '[default]\nname = "swap2"\nsize = "512M"\nno-swapon = true\n')
write("daemon_config", "flags", "\0--size\0001GiB\0--compressor\0lz4\0--workers\0004\0--fuse-io-uring\0on")
write("daemon_config", "bad", "accept-threshold-percent = 0\nbogus = 1\n\0--size\00012Q")
write("daemon_config", "help", "\0--help")

# --- A swap header page, as mkswap (and uzswapd) write it.
header = bytearray(PAGE)
struct.pack_into("<III", header, 1024, 1, 262143, 0)
header[1024 + 12:1024 + 28] = bytes(range(16))
header[1024 + 28:1024 + 34] = b"uzswap"
header[PAGE - 10:] = b"SWAPSPACE2"
write("kernel_files", "swap-header", bytes(header))
