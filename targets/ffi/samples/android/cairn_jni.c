/* JNI glue for Cairn.kt over cairn.h (sample; build with the NDK, not compiled here). */
#include <jni.h>
#include <stdint.h>
#include "cairn.h"

static void throw_cairn(JNIEnv *env, CairnStatus s) {
  char msg[512];
  cairn_last_error(msg, sizeof msg);
  jclass cls = (*env)->FindClass(env, "dev/cairn/CairnException");
  jmethodID ctor = (*env)->GetMethodID(env, cls, "<init>", "(ILjava/lang/String;)V");
  jobject e = (*env)->NewObject(env, cls, ctor, (jint)s, (*env)->NewStringUTF(env, msg));
  (*env)->Throw(env, (jthrowable)e);
}

JNIEXPORT jlong JNICALL Java_dev_cairn_CairnNative_modelCreate(JNIEnv *env, jobject self, jbyteArray bytes) {
  jsize n = (*env)->GetArrayLength(env, bytes);
  jbyte *b = (*env)->GetByteArrayElements(env, bytes, NULL);
  uint64_t h = 0;
  CairnStatus s = cairn_model_create((const uint8_t *)b, (size_t)n, &h);
  (*env)->ReleaseByteArrayElements(env, bytes, b, JNI_ABORT);
  if (s != CAIRN_STATUS_OK) throw_cairn(env, s);
  return (jlong)h;
}

JNIEXPORT jfloatArray JNICALL Java_dev_cairn_CairnNative_modelRun(JNIEnv *env, jobject self, jlong h, jfloatArray input, jint output) {
  size_t size = 0, n = 0;
  CairnStatus s = cairn_model_size((uint64_t)h, 1, (size_t)output, &size);
  if (s != CAIRN_STATUS_OK) { throw_cairn(env, s); return NULL; }
  jfloatArray out = (*env)->NewFloatArray(env, (jsize)size);
  jfloat *x = (*env)->GetFloatArrayElements(env, input, NULL);
  jfloat *y = (*env)->GetFloatArrayElements(env, out, NULL);
  s = cairn_model_run((uint64_t)h, x, (size_t)(*env)->GetArrayLength(env, input), (size_t)output, y, size, &n);
  (*env)->ReleaseFloatArrayElements(env, input, x, JNI_ABORT);
  (*env)->ReleaseFloatArrayElements(env, out, y, 0);
  if (s != CAIRN_STATUS_OK) throw_cairn(env, s);
  return out;
}

JNIEXPORT void JNICALL Java_dev_cairn_CairnNative_modelFree(JNIEnv *env, jobject self, jlong h) {
  cairn_model_free((uint64_t)h);
}

JNIEXPORT jlong JNICALL Java_dev_cairn_CairnNative_memoryCreate(JNIEnv *env, jobject self, jint dim, jint max) {
  uint64_t h = 0;
  CairnStatus s = cairn_memory_create((size_t)dim, (size_t)max, &h);
  if (s != CAIRN_STATUS_OK) throw_cairn(env, s);
  return (jlong)h;
}

JNIEXPORT void JNICALL Java_dev_cairn_CairnNative_memoryAdd(JNIEnv *env, jobject self, jlong h, jfloatArray e, jint label, jint importance) {
  jfloat *v = (*env)->GetFloatArrayElements(env, e, NULL);
  CairnStatus s = cairn_memory_add((uint64_t)h, v, (size_t)(*env)->GetArrayLength(env, e), (uint16_t)label, (uint8_t)importance, 0, NULL);
  (*env)->ReleaseFloatArrayElements(env, e, v, JNI_ABORT);
  if (s != CAIRN_STATUS_OK) throw_cairn(env, s);
}

JNIEXPORT void JNICALL Java_dev_cairn_CairnNative_memoryFree(JNIEnv *env, jobject self, jlong h) {
  cairn_memory_free((uint64_t)h);
}
