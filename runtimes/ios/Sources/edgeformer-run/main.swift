// macOS: swift run edgeformer-run BUNDLE_DIR "Return the" [MAX_NEW_TOKENS]
import EdgeformerRuntime
import Foundation

let args = CommandLine.arguments
guard args.count >= 2 else {
    FileHandle.standardError.write("usage: edgeformer-run BUNDLE_DIR [TEXT] [MAX_NEW_TOKENS]\n".data(using: .utf8)!)
    exit(2)
}
do {
    let bundle = try EdgeformerBundle(directory: URL(fileURLWithPath: args[1]))
    let runner = try Runner(bundle: bundle)
    let text = args.count > 2 ? args[2] : "Return the"
    let steps = args.count > 3 ? Int(args[3]) ?? 32 : 32
    switch bundle.family {
    case "decoder":
        let tokens = try runner.generate(ByteTokenizer.encode(text, bos: true), maxNewTokens: steps)
        print(bundle.byteTokenizer ? ByteTokenizer.decode(tokens) : tokens.map(String.init).joined(separator: " "))
    case "encoder-decoder":
        print(try runner.translate([5, 6, 7, 8, 9, 10], maxNewTokens: steps).map(String.init).joined(separator: " "))
    case "encoder":
        let ids = bundle.byteTokenizer ? ByteTokenizer.encode(text, bos: false) : [5, 17, 42]
        let (embedding, logits) = try runner.encode(ids)
        print("embedding (\(embedding.count)): \(embedding.prefix(8))...")
        if let logits { print("logits: \(logits)") }
    default:
        throw BundleError("this sample runs encoder, decoder and encoder-decoder bundles, not \(bundle.family)")
    }
} catch {
    FileHandle.standardError.write("error: \(error)\n".data(using: .utf8)!)
    exit(1)
}
