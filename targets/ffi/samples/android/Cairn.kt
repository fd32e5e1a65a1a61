// A Kotlin wrapper over cairn's C ABI through JNI (sample; not compiled here — see ../README.md).
package dev.cairn

class CairnException(val status: Int, message: String) : Exception("cairn $status: $message")

object CairnNative {
    init { System.loadLibrary("cairn_jni") }
    // Each returns a handle (> 0) or throws CairnException.
    external fun modelCreate(bytes: ByteArray): Long
    external fun modelRun(handle: Long, input: FloatArray, output: Int): FloatArray
    external fun modelFree(handle: Long)
    external fun memoryCreate(dim: Int, maxRecords: Int): Long
    external fun memoryAdd(handle: Long, embedding: FloatArray, label: Int, importance: Int)
    external fun memoryFree(handle: Long)
}

class CairnModel(bytes: ByteArray) : AutoCloseable {
    private val handle = CairnNative.modelCreate(bytes)
    fun run(input: FloatArray, output: Int = 0): FloatArray = CairnNative.modelRun(handle, input, output)
    override fun close() = CairnNative.modelFree(handle)
}
