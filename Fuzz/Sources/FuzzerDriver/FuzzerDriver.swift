import CFuzzerDriver

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The input under test; set once, before libFuzzer starts, and only read afterwards.
nonisolated(unsafe) private var currentTest: ((UnsafeRawBufferPointer) -> Void)?

/// Runs libFuzzer with this process's arguments, calling `test` with each input, and exits with
/// the driver's status. A broken invariant in `test` traps, which libFuzzer reports as a crash.
public func runFuzzer(_ test: @escaping (UnsafeRawBufferPointer) -> Void) -> Never {
    currentTest = test
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    let status = LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        currentTest?(UnsafeRawBufferPointer(start: data, count: size))
        return 0
    }
    exit(status)
}
