import Testing

/// Every test that starts worker processes runs inside this suite, one at a time: on a
/// 2-core machine, dozens of workers and plugin processes at once would turn timing-based
/// expectations (time limits, grace periods, heartbeats) into noise. Unit tests still run in
/// parallel beside it.
@Suite(.serialized) struct Integration {}
