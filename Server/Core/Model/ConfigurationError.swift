/// A setting that cannot be used, with what is wrong in words an admin can act on.
public struct ConfigurationError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
