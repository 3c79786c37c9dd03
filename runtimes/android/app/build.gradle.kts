plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "dev.edgeformer.sample"
    compileSdk = 34
    defaultConfig {
        applicationId = "dev.edgeformer.sample"
        minSdk = 24
        targetSdk = 34
        versionCode = 1
        versionName = "0.1.0"
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }
    // .onnx / .ort files are stored uncompressed so they can be read straight from the APK.
    androidResources { noCompress += listOf("onnx", "ort", "json") }
}

dependencies {
    // Full build: every operator, including the contrib ops of fused bundles (MultiHeadAttention,
    // SkipLayerNormalization, BiasGelu). A bundle's reduced-operator config can drive a custom
    // minimal build instead (onnxruntime's build.py --minimal_build --include_ops_by_config).
    implementation("com.microsoft.onnxruntime:onnxruntime-android:${property("onnxruntimeVersion")}")
}
