package dev.edgeformer.sample

import org.json.JSONArray
import org.json.JSONObject
import java.io.File
import java.security.MessageDigest

/** One graph input or output as manifest.json describes it (symbolic dimensions are names). */
data class Spec(val name: String, val dtype: String, val shape: List<Any>)

/**
 * A bundle directory from `edgeformer export`: manifest.json read and checked against
 * manifest.sha256, every listed file verified against its sha256 before any session sees it. Throws IllegalStateException /
 * IllegalArgumentException with a message that says what is wrong.
 */
class Bundle(val dir: File) {
    val manifest: JSONObject

    init {
        val file = File(dir, "manifest.json")
        require(file.isFile) { "$dir is not a bundle (no manifest.json)" }
        val raw = file.readBytes()
        // manifest.sha256 (sha256sum format) covers the manifest itself: an edited manifest is refused
        val stamp = File(dir, "manifest.sha256")
        if (stamp.isFile) {
            val want = stamp.readText().trim().split(Regex("\\s+")).first()
            check(sha256(raw) == want) { "manifest.json does not match manifest.sha256 (edited or corrupted); re-export it" }
        }
        manifest = JSONObject(raw.toString(Charsets.UTF_8))
        check(manifest.optInt("format_version") == 1) {
            "manifest.json: format_version ${manifest.opt("format_version")} is not 1; re-export the bundle"
        }
        val files = manifest.getJSONObject("files")
        for (name in files.keys()) {
            val digest = sha256(member(name))
            check(digest == files.getString(name)) { "$name does not match its sha256 in manifest.json; re-export it" }
        }
    }

    val family: String get() = manifest.getString("family")
    val config: JSONObject get() = manifest.getJSONObject("config")
    val byteTokenizer: Boolean get() = manifest.optString("tokenizer") == "bytes"

    /** A file the manifest names, refusing names that would leave the bundle. */
    fun member(name: String): File {
        val escapes = name.isEmpty() || name.startsWith("/") || name.startsWith("\\") ||
            Regex("^[A-Za-z]:").containsMatchIn(name) || name.split('/', '\\').any { it == ".." }
        require(!escapes) { "manifest file $name points outside the bundle (refused)" }
        val file = File(dir, name)
        check(file.isFile) { "$name is missing (listed in manifest.json)" }
        return file
    }

    /** The file to load for a graph: its .ort form when the bundle has one (mobile targets), else the graph's file. */
    fun modelFile(graph: String): File {
        val file = manifest.getJSONObject("graphs").getJSONObject(graph).getString("file")
        val ort = file.removeSuffix(".onnx") + ".ort"
        return if (file.endsWith(".onnx") && manifest.getJSONObject("files").has(ort)) member(ort) else member(file)
    }

    fun inputs(graph: String): List<Spec> {
        val specs: JSONArray = manifest.getJSONObject("graphs").getJSONObject(graph).getJSONArray("inputs")
        return (0 until specs.length()).map { i ->
            val s = specs.getJSONObject(i)
            val shape = s.getJSONArray("shape")
            Spec(s.getString("name"), s.getString("dtype"), (0 until shape.length()).map { shape.get(it) })
        }
    }

    companion object {
        fun sha256(bytes: ByteArray): String =
            MessageDigest.getInstance("SHA-256").digest(bytes).joinToString("") { "%02x".format(it) }

        fun sha256(file: File): String {
            val digest = MessageDigest.getInstance("SHA-256")
            file.inputStream().use { input ->
                val buffer = ByteArray(1 shl 20)
                while (true) {
                    val n = input.read(buffer)
                    if (n < 0) break
                    digest.update(buffer, 0, n)
                }
            }
            return digest.digest().joinToString("") { "%02x".format(it) }
        }
    }
}

/** The demo models' byte-level tokenizer: ids 0-255 are UTF-8 bytes, 256 pad, 257 begin-of-text, 258 end-of-text. */
object ByteTokenizer {
    const val PAD = 256L
    const val BOS = 257L
    const val EOS = 258L

    fun encode(text: String, bos: Boolean): LongArray =
        (if (bos) longArrayOf(BOS) else LongArray(0)) + text.toByteArray(Charsets.UTF_8).map { it.toLong() and 0xFF }

    fun decode(ids: List<Long>): String =
        ids.filter { it in 0..255 }.map { it.toByte() }.toByteArray().toString(Charsets.UTF_8)
}
