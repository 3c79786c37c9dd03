// swift-tools-version:5.9
// The edgeformer iOS/macOS sample: a library that runs a bundle on onnxruntime's Objective-C API
// (the onnxruntime Swift package), and a command-line runner for macOS. See README.md: this was
// not built or run on the machine it was written on.
import PackageDescription

let package = Package(
    name: "EdgeformerSample",
    platforms: [.iOS(.v15), .macOS(.v13)],
    products: [
        .library(name: "EdgeformerRuntime", targets: ["EdgeformerRuntime"]),
        .executable(name: "edgeformer-run", targets: ["edgeformer-run"]),
    ],
    dependencies: [
        // onnxruntime-objc as a Swift package; the same API as the CocoaPods pod `onnxruntime-objc`.
        .package(url: "https://github.com/microsoft/onnxruntime-swift-package-manager", exact: "1.20.0"),
    ],
    targets: [
        .target(
            name: "EdgeformerRuntime",
            dependencies: [.product(name: "onnxruntime", package: "onnxruntime-swift-package-manager")]
        ),
        .executableTarget(name: "edgeformer-run", dependencies: ["EdgeformerRuntime"]),
    ]
)
