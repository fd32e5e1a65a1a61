// A Swift wrapper over cairn's C ABI (sample; not compiled here — see ../README.md).
import Foundation

public struct CairnError: Error, CustomStringConvertible {
    public let status: CairnStatus
    public let message: String
    public var description: String { "cairn \(status.rawValue): \(message)" }
}

private func check(_ s: CairnStatus) throws {
    guard s != CAIRN_STATUS_OK else { return }
    var buf = [CChar](repeating: 0, count: 512)
    _ = cairn_last_error(&buf, buf.count)
    throw CairnError(status: s, message: String(cString: buf))
}

public final class CairnModel {
    private var handle: UInt64 = 0

    public init(bytes: Data) throws {
        try bytes.withUnsafeBytes { raw in
            try check(cairn_model_create(raw.bindMemory(to: UInt8.self).baseAddress, raw.count, &handle))
        }
    }

    deinit { _ = cairn_model_free(handle) }

    /// Output `index` for one input (the model's single input), as floats.
    public func run(_ input: [Float], output index: Int = 0) throws -> [Float] {
        var size = 0
        try check(cairn_model_size(handle, 1, index, &size))
        var out = [Float](repeating: 0, count: size)
        var n = 0
        try check(cairn_model_run(handle, input, input.count, index, &out, out.count, &n))
        return Array(out.prefix(n))
    }
}

public final class CairnMemory {
    private var handle: UInt64 = 0
    public let dim: Int

    public init(dim: Int, maxRecords: Int) throws {
        self.dim = dim
        try check(cairn_memory_create(dim, maxRecords, &handle))
    }

    deinit { _ = cairn_memory_free(handle) }

    public func add(_ embedding: [Float], label: UInt16, importance: UInt8 = 128) throws {
        let ms = UInt64(Date().timeIntervalSince1970 * 1000)
        try check(cairn_memory_add(handle, embedding, embedding.count, label, importance, ms, nil))
    }

    /// Labels and cosines of the `k` most similar memories.
    public func query(_ q: [Float], k: Int) throws -> [(label: UInt16, cosine: Float)] {
        var labels = [UInt16](repeating: 0, count: k)
        var scores = [Float](repeating: 0, count: k)
        var found = 0
        try check(cairn_memory_query(handle, q, q.count, k, nil, &labels, &scores, &found))
        return (0..<found).map { (labels[$0], scores[$0]) }
    }
}
