import CourierCore
import Foundation
import XCTest

final class DedicatedThreadExecutorTests: XCTestCase {
    private static func threadsNamed(_ name: String) -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.filter { task in
            ((try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines) == name
        }.count
    }

    func testWorkThatPrefersItRunsOnItsThreadAndTheThreadEndsWithIt() async throws {
        let name = "courier-ex-\(Int.random(in: 1000...9999))" // 15 bytes: Linux keeps no more
        var executor: DedicatedThreadExecutor? = DedicatedThreadExecutor(name: name)
        XCTAssertNotEqual(currentThreadName(), name)
        let ran = await withTaskExecutorPreference(executor) { () async -> [String] in
            // Child tasks inherit the preference: every one runs on the one thread.
            await withTaskGroup(of: String.self) { group in
                for _ in 0..<8 { group.addTask { currentThreadName() } }
                return await group.reduce(into: []) { $0.append($1) }
            } + [currentThreadName()]
        }
        XCTAssertEqual(ran, Array(repeating: name, count: 9))
        XCTAssertEqual(Self.threadsNamed(name), 1)

        executor = nil
        let deadline = Date().addingTimeInterval(5)
        while Self.threadsNamed(name) > 0 && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertEqual(Self.threadsNamed(name), 0, "the thread ends once its executor is gone")
    }
}
