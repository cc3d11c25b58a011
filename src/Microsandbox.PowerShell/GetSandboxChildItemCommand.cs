using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Lists the files and directories in a sandbox.</para>
/// <para type="description">Returns an object for each item in a guest directory (and its subdirectories with -Recurse), with its name, path, type, size, mode, owner and modification time, as the guest agent reads them.</para>
/// </summary>
[Cmdlet(VerbsCommon.Get, "SandboxChildItem")]
[OutputType(typeof(SandboxItem))]
public sealed class GetSandboxChildItemCommand : SandboxItemCmdlet
{
    /// <summary>
    /// <para type="description">Absolute guest paths of directories to list; a file gives itself. Default: /.</para>
    /// </summary>
    [Parameter(Position = 0)]
    [ValidateNotNullOrEmpty]
    public string[] Path { get; set; } = ["/"];

    /// <summary>
    /// <para type="description">List the subdirectories too, all the way down. Links to directories are listed, not followed.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter Recurse { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord() => ForEachPath(Path, path =>
    {
        foreach (SandboxItem item in Run((_, token) => Engine.GetChildItemsAsync(Name, path, Recurse, token)))
        {
            WriteObject(item);
        }
    });
}
