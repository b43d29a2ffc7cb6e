"""Crafted IPv4 packets for tests/tests/vpn.rs, sent and watched with raw
sockets (stdlib only).

  crafted.py send SRC DST NAME...   sends the named probes from SRC to DST
  crafted.py listen                 prints "seen NAME" for every probe that
                                    arrives (any of ICMP, IPIP, UDP, GRE)

Every probe carries the marker b"gh-probe:NAME", so a listener can tell
which one arrived, even inside a tunnel.
"""
import select
import socket
import struct
import sys

MARK = b"gh-probe:"


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ipv4(src, dst, proto, payload, options=b"", frag=0):
    ihl = 5 + len(options) // 4
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl, 0, ihl * 4 + len(payload), 0x4748, frag, 64, proto, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    ) + options
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def udp(port, data):
    # Checksum 0: none (allowed for UDP over IPv4).
    return struct.pack("!HHHH", 40000, port, 8 + len(data), 0) + data


def icmp(kind, data):
    message = struct.pack("!BBHHH", kind, 0, 0, 0x4748, 1) + data
    return message[:2] + struct.pack("!H", checksum(message)) + message[4:]


def probes(src, dst):
    mark = lambda name: MARK + name.encode()
    # Loose source route through dst itself, padded to 8 bytes with a NOP.
    lsrr = bytes([131, 7, 4]) + socket.inet_aton(dst) + b"\x01"
    return {
        "udp-80": ipv4(src, dst, 17, udp(80, mark("udp-80"))),
        "icmp-echo": ipv4(src, dst, 1, icmp(8, mark("icmp-echo"))),
        "udp-81": ipv4(src, dst, 17, udp(81, mark("udp-81"))),
        "icmp-timestamp": ipv4(src, dst, 1, icmp(13, mark("icmp-timestamp") + bytes(12))),
        "gre": ipv4(src, dst, 47, struct.pack("!HH", 0, 0x0800)
                    + ipv4(src, dst, 17, udp(80, mark("gre")))),
        "ipip": ipv4(src, dst, 4, ipv4(src, dst, 17, udp(80, mark("ipip")))),
        "lsrr": ipv4(src, dst, 17, udp(80, mark("lsrr")), options=lsrr),
        # A later fragment (offset 1480) of a UDP datagram: no port in it.
        "later-fragment": ipv4(src, dst, 17, mark("later-fragment") + bytes(16), frag=185),
    }


def send(src, dst, names):
    table = probes(src, dst)
    out = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for name in names:
        out.sendto(table[name], (dst, 0))
        print("sent", name, flush=True)


def listen():
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_RAW, proto) for proto in (1, 4, 17, 47)]
    print("listening", flush=True)
    while True:
        ready, _, _ = select.select(sockets, [], [])
        for sock in ready:
            packet = sock.recv(65535)
            at = packet.find(MARK)
            if at >= 0:
                name = packet[at + len(MARK):].split(b"\0")[0].decode(errors="replace")
                print("seen", name, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        listen()
