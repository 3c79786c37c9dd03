import Foundation
import OnnxRuntimeBindings

/// The loops of runtimes/python/run_bundle.py on onnxruntime's Objective-C API: embeddings and
/// logits for encoders, greedy generation with the KV cache for decoders (present.* outputs are
/// the next step's past_key_values.* inputs) and encoder-decoders.
public final class Runner {
    let bundle: EdgeformerBundle
    let env: ORTEnv
    var sessions: [String: ORTSession] = [:]

    /// `coreML`: put what the CoreML provider takes on the Neural Engine / GPU, the rest on the CPU.
    public init(bundle: EdgeformerBundle, coreML: Bool = false) throws {
        self.bundle = bundle
        env = try ORTEnv(loggingLevel: .warning)
        let options = try ORTSessionOptions()
        try options.setGraphOptimizationLevel(.all)
        if coreML { try options.appendCoreMLExecutionProvider(with: ORTCoreMLExecutionProviderOptions()) }
        for graph in bundle.graphNames {
            sessions[graph] = try ORTSession(env: env, modelPath: try bundle.modelFile(graph).path, sessionOptions: options)
        }
    }

    func session(_ graph: String) throws -> ORTSession {
        guard let session = sessions[graph] else { throw BundleError("the bundle has no graph \(graph)") }
        return session
    }

    func int64(_ values: [Int64]) throws -> ORTValue {
        let data = NSMutableData(bytes: values, length: values.count * MemoryLayout<Int64>.size)
        return try ORTValue(tensorData: data, elementType: .int64, shape: [1, NSNumber(value: values.count)])
    }

    /// Zero-length self-attention caches (1, heads, 0, head_dim) for the inputs of length past_sequence.
    func emptyCache(_ graph: String) throws -> [String: ORTValue] {
        var cache: [String: ORTValue] = [:]
        for spec in bundle.inputs(graph) where spec.name.hasPrefix("past_key_values.") && spec.shape[2] as? String == "past_sequence" {
            let shape: [NSNumber] = [1, spec.shape[1] as? NSNumber ?? 0, 0, spec.shape[3] as? NSNumber ?? 0]
            cache[spec.name] = try ORTValue(tensorData: NSMutableData(), elementType: .float, shape: shape)
        }
        return cache
    }

    func run(_ graph: String, _ feeds: [String: ORTValue]) throws -> [String: ORTValue] {
        let session = try session(graph)
        return try session.run(withInputs: feeds, outputNames: Set(try session.outputNames()), runOptions: nil)
    }

    /// argmax over the last position's logits (the first maximum on ties, as numpy).
    func lastArgmax(_ logits: ORTValue) throws -> Int64 {
        let shape = try logits.tensorTypeAndShapeInfo().shape.map { $0.intValue } // (1, T, V)
        let data = try logits.tensorData() as Data
        return data.withUnsafeBytes { raw -> Int64 in
            let values = raw.bindMemory(to: Float.self)
            let offset = (shape[1] - 1) * shape[2]
            var best = 0
            for i in 1..<shape[2] where values[offset + i] > values[offset + best] { best = i }
            return Int64(best)
        }
    }

    static func asPast(_ outputs: [String: ORTValue]) -> [String: ORTValue] {
        var past: [String: ORTValue] = [:]
        for (name, value) in outputs where name.hasPrefix("present.") {
            past["past_key_values." + name.dropFirst("present.".count)] = value
        }
        return past
    }

    /// Greedy continuation of a prompt by a decoder-only bundle; stops at the config's eos_token_id.
    public func generate(_ prompt: [Int64], maxNewTokens: Int, onToken: (Int64) -> Void = { _ in }) throws -> [Int64] {
        let eos = Int64(bundle.configInt("eos_token_id") ?? -1)
        let steps = min(maxNewTokens, (bundle.configInt("max_positions") ?? 0) - prompt.count)
        var feeds = try emptyCache("model")
        feeds["input_ids"] = try int64(prompt)
        feeds["attention_mask"] = try int64(Array(repeating: 1, count: prompt.count))
        feeds["position_ids"] = try int64((0..<prompt.count).map { Int64($0) })
        var tokens: [Int64] = []
        for _ in 0..<max(steps, 0) {
            let outputs = try run("model", feeds)
            let token = try lastArgmax(outputs["logits"]!)
            tokens.append(token)
            onToken(token)
            if token == eos { break }
            let total = prompt.count + tokens.count
            feeds = Runner.asPast(outputs)
            feeds["input_ids"] = try int64([token])
            feeds["attention_mask"] = try int64(Array(repeating: 1, count: total))
            feeds["position_ids"] = try int64([Int64(total - 1)])
        }
        return tokens
    }

    /// Greedy output of an encoder-decoder bundle from the config's bos_token_id.
    public func translate(_ source: [Int64], maxNewTokens: Int) throws -> [Int64] {
        let eos = Int64(bundle.configInt("eos_token_id") ?? -1)
        var token = Int64(max(bundle.configInt("bos_token_id") ?? 0, 0))
        let mask = try int64(Array(repeating: 1, count: source.count))
        let cross = Runner.asPast(try run("encoder", ["input_ids": try int64(source), "attention_mask": mask]))
        var cache = try emptyCache("decoder")
        var tokens: [Int64] = []
        for _ in 0..<min(maxNewTokens, bundle.configInt("max_positions") ?? 0) {
            var feeds = cross.merging(cache) { a, _ in a }
            feeds["input_ids"] = try int64([token])
            feeds["encoder_attention_mask"] = mask
            let outputs = try run("decoder", feeds)
            token = try lastArgmax(outputs["logits"]!)
            tokens.append(token)
            if token == eos { break }
            cache = Runner.asPast(outputs)
        }
        return tokens
    }

    /// An encoder's embedding (`embeddings`, or the mean of last_hidden_state) and its logits when it has them.
    public func encode(_ ids: [Int64]) throws -> (embedding: [Float], logits: [Float]?) {
        let outputs = try run("model", ["input_ids": try int64(ids), "attention_mask": try int64(Array(repeating: 1, count: ids.count))])
        func floats(_ value: ORTValue) throws -> [Float] {
            let data = try value.tensorData() as Data
            return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        }
        var embedding: [Float]
        if let embeddings = outputs["embeddings"] {
            embedding = try floats(embeddings)
        } else {
            let hidden = outputs["last_hidden_state"]!
            let shape = try hidden.tensorTypeAndShapeInfo().shape.map { $0.intValue } // (1, T, C)
            let values = try floats(hidden)
            embedding = (0..<shape[2]).map { j in
                (0..<shape[1]).reduce(Float(0)) { $0 + values[$1 * shape[2] + j] } / Float(shape[1])
            }
        }
        return (embedding, try outputs["logits"].map(floats))
    }
}
