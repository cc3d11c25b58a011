
using System.Runtime.InteropServices;
using CpuArchitecture = System.Runtime.InteropServices.Architecture;

namespace Microsandbox.Engine.Images.Registry;

/// <summary>
/// An OCI platform (<c>linux/amd64</c>, <c>linux/arm64/v8</c>): which manifest of a multi-platform
/// index a sandbox can run.
/// </summary>
/// <param name="Os">The operating system, in Go's naming (<c>linux</c>).</param>
/// <param name="Architecture">The CPU architecture, in Go's naming (<c>amd64</c>, <c>arm64</c>).</param>
/// <param name="Variant">The CPU variant (<c>v8</c>), or null for any.</param>
public sealed record ImagePlatform(string Os, string Architecture, string? Variant = null)
{
    /// <summary>The platform of guests on this host: Linux on the host's own architecture.</summary>
    public static ImagePlatform Host { get; } = new("linux", HostArchitecture());

    /// <summary>Parses <c>os/architecture[/variant]</c>; fails with <c>InvalidImagePlatform</c>.</summary>
    public static ImagePlatform Parse(string text)
    {
        string[] parts = (text ?? "").Split('/');
        if (parts.Length is < 2 or > 3 || parts.Any(string.IsNullOrWhiteSpace))
        {
            throw new SandboxException("InvalidImagePlatform", SandboxErrorKind.InvalidArgument,
                $"'{text}' is not a platform; write it as os/architecture[/variant], such as linux/arm64.",
                text);
        }

        return new ImagePlatform(
            parts[0].ToLowerInvariant(),
            NormalizeArchitecture(parts[1].ToLowerInvariant()),
            parts.Length == 3 ? parts[2].ToLowerInvariant() : null);
    }

    /// <summary>
    /// Whether an index entry for <paramref name="os"/>, <paramref name="architecture"/> and
    /// <paramref name="variant"/> runs on this platform. A platform without a variant accepts any
    /// variant of its architecture.
    /// </summary>
    public bool Accepts(string? os, string? architecture, string? variant) =>
        string.Equals(os, Os, StringComparison.OrdinalIgnoreCase)
        && architecture is not null
        && NormalizeArchitecture(architecture.ToLowerInvariant()) == Architecture
        && (Variant is null || string.Equals(variant, Variant, StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// Fails with <c>ImagePlatformNotFound</c> when the image config says it is built for another
    /// platform; a config that names none passes.
    /// </summary>
    internal void EnsureRuns(ImageConfig config, object target)
    {
        if (config.Architecture is not null && !Accepts(config.Os, config.Architecture, config.Variant))
        {
            throw new SandboxException("ImagePlatformNotFound", SandboxErrorKind.NotFound,
                $"The image {target} is built for {config.Os}/{config.Architecture}, not {this}.", target);
        }
    }

    /// <summary><c>os/architecture[/variant]</c>.</summary>
    public override string ToString() =>
        Variant is null ? $"{Os}/{Architecture}" : $"{Os}/{Architecture}/{Variant}";

    private static string HostArchitecture() => RuntimeInformation.OSArchitecture switch
    {
        CpuArchitecture.X64 => "amd64",
        CpuArchitecture.Arm64 => "arm64",
        CpuArchitecture.Arm => "arm",
        CpuArchitecture.X86 => "386",
        CpuArchitecture.S390x => "s390x",
        CpuArchitecture.Ppc64le => "ppc64le",
        // RiscV64's enum name is Go's name too; it postdates net8.0's enum.
        CpuArchitecture other => other.ToString().ToLowerInvariant(),
    };

    // Kernel names (uname -m) turn up in hand-written platforms; the image world uses Go's.
    private static string NormalizeArchitecture(string architecture) => architecture switch
    {
        "x86_64" or "x86-64" => "amd64",
        "aarch64" => "arm64",
        _ => architecture,
    };
}
