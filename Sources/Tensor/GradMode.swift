#if canImport(Glibc)
import Glibc
#endif

/// Whether operations record themselves on the autograd tape, per thread.
///
/// PyTorch counterpart: `torch.no_grad()` / `torch.is_grad_enabled()`. Scoped, never global:
/// `withNoGrad { ... }` disables recording on the calling thread only, so several in-process
/// ranks (threads) can run side by side.
public enum GradMode {
    nonisolated(unsafe) static var key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k, nil)
        return k
    }()

    /// True when ops record backward closures on this thread.
    @inline(__always)
    public static var isEnabled: Bool {
        pthread_getspecific(key) == nil
    }

    static func set(enabled: Bool) {
        pthread_setspecific(key, enabled ? nil : UnsafeRawPointer(bitPattern: 1))
    }
}

/// Runs `body` with autograd recording off on this thread (no tape, no saved activations).
@discardableResult
public func withNoGrad<T>(_ body: () throws -> T) rethrows -> T {
    let was = GradMode.isEnabled
    GradMode.set(enabled: false)
    defer { GradMode.set(enabled: was) }
    return try body()
}
