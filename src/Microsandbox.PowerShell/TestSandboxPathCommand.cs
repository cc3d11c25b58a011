using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>What kind of item Test-SandboxPath looks for.</summary>
public enum SandboxPathType
{
    /// <summary>Anything.</summary>
    Any,

    /// <summary>Anything but a directory.</summary>
    Leaf,

    /// <summary>A directory.</summary>
    Container,
}

/// <summary>
/// <para type="synopsis">Tells whether a path exists in a sandbox.</para>
/// <para type="description">Returns $true if the guest path exists (and, with -PathType, is of that kind), else $false. Links are followed, so a link to a directory is a container and a dangling link does not exist.</para>
/// </summary>
[Cmdlet(VerbsDiagnostic.Test, "SandboxPath")]
[OutputType(typeof(bool))]
public sealed class TestSandboxPathCommand : SandboxItemCmdlet
{
    /// <summary>
    /// <para type="description">Absolute guest paths to test.</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 0)]
    [ValidateNotNullOrEmpty]
    public string[] Path { get; set; } = [];

    /// <summary>
    /// <para type="description">Any (the default), Leaf (anything but a directory) or Container (a directory).</para>
    /// </summary>
    [Parameter]
    public SandboxPathType PathType { get; set; } = SandboxPathType.Any;

    /// <inheritdoc/>
    protected override void ProcessRecord() => ForEachPath(Path, path =>
    {
        SandboxItem? item = Run((_, token) => Engine.GetItemAsync(Name, path, followLinks: true, token));
        WriteObject(item is not null && PathType switch
        {
            SandboxPathType.Leaf => item.Type != SandboxItemType.Directory,
            SandboxPathType.Container => item.Type == SandboxItemType.Directory,
            _ => true,
        });
    });
}
