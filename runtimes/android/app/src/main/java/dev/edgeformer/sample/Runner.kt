package dev.edgeformer.sample

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OnnxValue
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import java.nio.FloatBuffer
import java.nio.LongBuffer

/**
 * The loops of runtimes/python/run_bundle.py on onnxruntime-android: embeddings and logits for
 * encoders, greedy generation with the KV cache for decoders (present.* outputs become the next
 * step's past_key_values.* inputs) and encoder-decoders (the encoder and its cross-attention
 * cache run once).
 */
class Runner(private val bundle: Bundle, useNnapi: Boolean = false) : AutoCloseable {
    private val env = OrtEnvironment.getEnvironment()
    private val sessions: Map<String, OrtSession>

    init {
        val options = OrtSession.SessionOptions().apply {
            setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT)
            if (useNnapi) addNnapi() // nodes NNAPI cannot take stay on the CPU provider
        }
        val graphs = bundle.manifest.getJSONObject("graphs")
        sessions = graphs.keys().asSequence().associateWith { env.createSession(bundle.modelFile(it).path, options) }
    }

    private fun ids(values: LongArray): OnnxTensor =
        OnnxTensor.createTensor(env, LongBuffer.wrap(values), longArrayOf(1, values.size.toLong()))

    private fun ones(n: Int): OnnxTensor = ids(LongArray(n) { 1L })

    /** Zero-length self-attention caches (1, heads, 0, head_dim) for the inputs of length past_sequence. */
    private fun emptyCache(graph: String): Map<String, OnnxTensor> =
        bundle.inputs(graph).filter { it.name.startsWith("past_key_values.") && it.shape[2] == "past_sequence" }
            .associate {
                val shape = longArrayOf(1, (it.shape[1] as Number).toLong(), 0, (it.shape[3] as Number).toLong())
                it.name to OnnxTensor.createTensor(env, FloatBuffer.allocate(0), shape)
            }

    /** argmax over the last position's logits (the first maximum on ties, as numpy). */
    private fun lastArgmax(logits: OnnxTensor): Long {
        val shape = logits.info.shape // (1, T, V)
        val vocab = shape[2].toInt()
        val data = logits.floatBuffer
        val offset = ((shape[1] - 1) * vocab).toInt()
        var best = 0
        for (i in 1 until vocab) if (data.get(offset + i) > data.get(offset + best)) best = i
        return best.toLong()
    }

    private fun presentAsPast(result: OrtSession.Result): Map<String, OnnxTensor> =
        result.filter { it.key.startsWith("present.") }
            .associate { it.key.replaceFirst("present.", "past_key_values.") to it.value as OnnxTensor }

    /** Greedy continuation of a prompt by a decoder-only bundle; stops at the config's eos_token_id. */
    fun generate(prompt: LongArray, maxNewTokens: Int, onToken: (Long) -> Unit = {}): List<Long> {
        val eos = bundle.config.optLong("eos_token_id", -1)
        val steps = minOf(maxNewTokens, bundle.config.getInt("max_positions") - prompt.size)
        val session = sessions.getValue("model")
        var feeds: Map<String, OnnxTensor> = mapOf(
            "input_ids" to ids(prompt),
            "attention_mask" to ones(prompt.size),
            "position_ids" to ids(LongArray(prompt.size) { it.toLong() }),
        ) + emptyCache("model")
        val tokens = mutableListOf<Long>()
        var previous: OrtSession.Result? = null
        for (step in 0 until steps) {
            val result = session.run(feeds)
            val token = lastArgmax(result.get("logits").get() as OnnxTensor)
            tokens += token
            onToken(token)
            feeds.filterKeys { !it.startsWith("past_key_values.") }.values.forEach(OnnxValue::close)
            previous?.close() // the cache it held has been fed in: done with it
            previous = result
            if (token == eos) break
            val total = prompt.size + tokens.size
            feeds = mapOf(
                "input_ids" to ids(longArrayOf(token)),
                "attention_mask" to ones(total),
                "position_ids" to ids(longArrayOf(total - 1L)),
            ) + presentAsPast(result)
        }
        previous?.close()
        return tokens
    }

    /** Greedy output of an encoder-decoder bundle from the config's bos_token_id. */
    fun translate(source: LongArray, maxNewTokens: Int, onToken: (Long) -> Unit = {}): List<Long> {
        val eos = bundle.config.optLong("eos_token_id", -1)
        var token = maxOf(bundle.config.optLong("bos_token_id", 0), 0)
        val mask = ones(source.size)
        val encoded = sessions.getValue("encoder").run(mapOf("input_ids" to ids(source), "attention_mask" to mask))
        val cross = presentAsPast(encoded)
        var cache: Map<String, OnnxTensor> = emptyCache("decoder")
        val tokens = mutableListOf<Long>()
        var previous: OrtSession.Result? = null
        for (step in 0 until minOf(maxNewTokens, bundle.config.getInt("max_positions"))) {
            val input = ids(longArrayOf(token))
            val result = sessions.getValue("decoder").run(
                mapOf("input_ids" to input, "encoder_attention_mask" to mask) + cross + cache,
            )
            input.close()
            token = lastArgmax(result.get("logits").get() as OnnxTensor)
            tokens += token
            onToken(token)
            previous?.close()
            previous = result
            if (token == eos) break
            cache = presentAsPast(result)
        }
        previous?.close()
        encoded.close()
        return tokens
    }

    /** An encoder's embedding (the `embeddings` output, or the mean of last_hidden_state) and logits when it has them. */
    fun encode(tokens: LongArray): Pair<FloatArray, FloatArray?> {
        val feeds = mapOf("input_ids" to ids(tokens), "attention_mask" to ones(tokens.size))
        sessions.getValue("model").run(feeds).use { out ->
            val embeddings = out.get("embeddings").orElse(null) as OnnxTensor?
            val embedding = if (embeddings != null) {
                FloatArray(embeddings.info.shape[1].toInt()).also { embeddings.floatBuffer.get(it) }
            } else {
                val hidden = out.get("last_hidden_state").get() as OnnxTensor
                val (_, t, c) = hidden.info.shape.map { it.toInt() }
                val data = hidden.floatBuffer
                FloatArray(c) { j -> (0 until t).sumOf { i -> data.get(i * c + j).toDouble() }.toFloat() / t }
            }
            val logitsTensor = out.get("logits").orElse(null) as OnnxTensor?
            val logits = logitsTensor?.let { t ->
                FloatArray(t.info.shape.drop(1).fold(1L, Long::times).toInt()).also { t.floatBuffer.get(it) }
            }
            feeds.values.forEach(OnnxValue::close)
            return embedding to logits
        }
    }

    override fun close() = sessions.values.forEach(OrtSession::close)
}
