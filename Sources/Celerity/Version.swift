public enum CelerityVersion { public static let string = "0.1.0" }
