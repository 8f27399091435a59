// The seeded generator lives with the fault injector in CoAP; tests keep reaching it from here.
@_exported import struct CoAP.SplitMix64
