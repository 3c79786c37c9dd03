package dev.edgeformer.sample

import android.app.Activity
import android.os.Bundle as State
import android.widget.ScrollView
import android.widget.TextView
import java.io.File
import kotlin.concurrent.thread

/**
 * Copies assets/bundle/ (manifest.json and the model files) to the app's files, checks it, and
 * runs it once off the main thread: greedy text for decoders, tokens for encoder-decoders,
 * embeddings and logits for encoders. The result is shown and logged.
 */
class MainActivity : Activity() {
    override fun onCreate(savedInstanceState: State?) {
        super.onCreate(savedInstanceState)
        val view = TextView(this).apply { setPadding(32, 32, 32, 32); text = "loading the bundle..." }
        setContentView(ScrollView(this).apply { addView(view) })
        thread {
            val message = try {
                run(copyBundle(), prompt = "Return the", maxNewTokens = 32)
            } catch (e: Exception) {
                "error: ${e.message}"
            }
            android.util.Log.i("edgeformer", message)
            runOnUiThread { view.text = message }
        }
    }

    private fun copyBundle(): File {
        val dir = File(filesDir, "bundle").apply { mkdirs() }
        val names = assets.list("bundle").orEmpty()
        check(names.contains("manifest.json")) { "no assets/bundle/manifest.json: copy a bundle there (see README.md)" }
        for (name in names) assets.open("bundle/$name").use { input -> File(dir, name).outputStream().use(input::copyTo) }
        return dir
    }

    private fun run(dir: File, prompt: String, maxNewTokens: Int): String {
        val bundle = Bundle(dir)
        Runner(bundle).use { runner ->
            val started = System.nanoTime()
            val result = when (bundle.family) {
                "decoder" -> {
                    val ids = if (bundle.byteTokenizer) ByteTokenizer.encode(prompt, bos = true) else longArrayOf(1, 2, 3)
                    val tokens = runner.generate(ids, maxNewTokens)
                    if (bundle.byteTokenizer) prompt + ByteTokenizer.decode(tokens) else tokens.joinToString(" ")
                }
                "encoder-decoder" -> runner.translate(longArrayOf(5, 6, 7, 8, 9, 10), maxNewTokens).joinToString(" ")
                "encoder" -> {
                    val ids = if (bundle.byteTokenizer) ByteTokenizer.encode(prompt, bos = false) else longArrayOf(5, 17, 42)
                    val (embedding, logits) = runner.encode(ids)
                    "embedding (${embedding.size}): ${embedding.take(8)}...\nlogits: ${logits?.toList()}"
                }
                else -> error("this sample runs encoder, decoder and encoder-decoder bundles, not ${bundle.family}")
            }
            val ms = (System.nanoTime() - started) / 1_000_000
            return "${bundle.manifest.optString("name")} (${bundle.family}), $ms ms:\n$result"
        }
    }
}
