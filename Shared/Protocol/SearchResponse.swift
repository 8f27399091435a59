/// The answer to a `SearchRequest`: the hits, best first.
public struct SearchResponse: Hashable, Sendable {
    /// The hits, best first.
    public var hits: [SearchHit]

    /// Creates a search answer.
    public init(hits: [SearchHit]) {
        self.hits = hits
    }
}
