"""Every size limit of the wire protocols, named, with the reason for its value.

Other servers' choices, for comparison (shared/reference/tak-protocol.md section 1.7):
goatak rejects XML events over 2,048 bytes (too small: ATAK's own telestration shapes are 4.4 KB
and TAK Server mission-change events reach 34 KB); TAK Server allows 256 MiB on federation v2 and
64 KiB on its websocket; taky and OpenTAKServer set no cap at all and fall behind on events that
carry base64 images (taky issue #105).
"""

from __future__ import annotations

# Largest XML <event> (or <auth>) we accept on a stream or in a datagram. 1 MiB holds every real
# client message we know of (largest sample: a 34 KB mission change) with a wide margin for inline
# attachments, while bounding what one misbehaving peer can make us buffer.
MAX_XML_EVENT_BYTES = 1024 * 1024

# Largest TAK protocol v1 payload (the TakMessage after the 0xBF + varint header). Same reasoning
# and value as for XML: the protobuf form of an event is never larger than its XML form.
MAX_PROTO_EVENT_BYTES = 1024 * 1024

# A protobuf unsigned varint encodes a 64-bit value in at most 10 bytes (protocol.txt, "varint").
MAX_VARINT_BYTES = 10

# Largest UDP datagram: the IPv4/UDP payload maximum.
MAX_DATAGRAM_BYTES = 65_507

# The <auth> message must arrive within this many bytes of the stream's start (TAK Server reads at
# most 1024 bytes for it, tak-protocol.md section 3.3; we allow headroom for long passwords).
MAX_AUTH_BYTES = 4096

# Deepest element nesting inside one event. Real events nest 4 to 6 levels; 64 stops pathological
# nesting from costing parser recursion.
MAX_XML_DEPTH = 64
