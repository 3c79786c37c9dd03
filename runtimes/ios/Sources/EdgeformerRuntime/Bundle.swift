import CryptoKit
import Foundation

/// What is wrong with a bundle or a request, in words.
public struct BundleError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// One graph input as manifest.json describes it (symbolic dimensions are strings).
public struct Spec {
    public let name: String
    public let dtype: String
    public let shape: [Any]
}

/// A bundle directory from `edgeformer export`: manifest.json read and checked against
/// manifest.sha256, every listed file verified against its sha256 before a session sees it.
public struct EdgeformerBundle {
    public let directory: URL
    public let manifest: [String: Any]

    public init(directory: URL) throws {
        self.directory = directory
        let url = directory.appendingPathComponent("manifest.json")
        guard let data = try? Data(contentsOf: url),
              let manifest = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { throw BundleError("\(directory.path) is not a bundle (no readable manifest.json)") }
        // manifest.sha256 (sha256sum format) covers the manifest itself: an edited manifest is refused
        let stampURL = directory.appendingPathComponent("manifest.sha256")
        if let stamp = try? String(contentsOf: stampURL, encoding: .utf8) {
            let want = stamp.split(whereSeparator: { $0 == " " || $0 == "\n" }).first.map(String.init) ?? ""
            let got = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
            guard got == want else {
                throw BundleError("manifest.json does not match manifest.sha256 (edited or corrupted); re-export it")
            }
        }
        guard manifest["format_version"] as? Int == 1 else {
            throw BundleError("manifest.json: format_version is not 1; re-export the bundle")
        }
        self.manifest = manifest
        for (name, digest) in manifest["files"] as? [String: String] ?? [:] {
            let file = try member(name)
            let hex = SHA256.hash(data: try Data(contentsOf: file, options: .mappedIfSafe))
                .map { String(format: "%02x", $0) }.joined()
            guard hex == digest else { throw BundleError("\(name) does not match its sha256 in manifest.json") }
        }
    }

    public var family: String { manifest["family"] as? String ?? "custom" }
    public var config: [String: Any] { manifest["config"] as? [String: Any] ?? [:] }
    public var byteTokenizer: Bool { manifest["tokenizer"] as? String == "bytes" }
    public var graphNames: [String] { Array((manifest["graphs"] as? [String: Any] ?? [:]).keys) }

    public func configInt(_ key: String) -> Int? { config[key] as? Int }

    /// A file the manifest names, refusing names that would leave the bundle.
    public func member(_ name: String) throws -> URL {
        let parts = name.split(whereSeparator: { $0 == "/" || $0 == "\\" })
        if name.isEmpty || name.hasPrefix("/") || name.hasPrefix("\\") || parts.contains("..")
            || name.range(of: "^[A-Za-z]:", options: .regularExpression) != nil {
            throw BundleError("manifest file \(name) points outside the bundle (refused)")
        }
        let url = directory.appendingPathComponent(name)
        guard FileManager.default.fileExists(atPath: url.path) else { throw BundleError("\(name) is missing") }
        return url
    }

    /// The file to load for a graph: its .ort form when the bundle has one (mobile targets), else its file.
    public func modelFile(_ graph: String) throws -> URL {
        guard let entry = (manifest["graphs"] as? [String: Any])?[graph] as? [String: Any],
              let file = entry["file"] as? String else { throw BundleError("the bundle has no graph \(graph)") }
        let ort = (file.hasSuffix(".onnx") ? String(file.dropLast(5)) : file) + ".ort"
        let files = manifest["files"] as? [String: String] ?? [:]
        return try member(file.hasSuffix(".onnx") && files[ort] != nil ? ort : file)
    }

    public func inputs(_ graph: String) -> [Spec] {
        let entry = (manifest["graphs"] as? [String: Any])?[graph] as? [String: Any]
        return (entry?["inputs"] as? [[String: Any]] ?? []).map {
            Spec(name: $0["name"] as? String ?? "", dtype: $0["dtype"] as? String ?? "", shape: $0["shape"] as? [Any] ?? [])
        }
    }
}

/// The demo models' byte-level tokenizer: ids 0-255 are UTF-8 bytes, 256 pad, 257 begin-of-text, 258 end-of-text.
public enum ByteTokenizer {
    public static let pad: Int64 = 256, bos: Int64 = 257, eos: Int64 = 258

    public static func encode(_ text: String, bos addBos: Bool) -> [Int64] {
        (addBos ? [bos] : []) + Array(text.utf8).map { Int64($0) }
    }

    public static func decode(_ ids: [Int64]) -> String {
        String(decoding: ids.filter { (0..<256).contains($0) }.map { UInt8($0) }, as: UTF8.self)
    }
}
