using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Removes files, directories and links in a sandbox.</para>
/// <para type="description">Deletes guest items. A directory that is not empty is refused with DirectoryNotEmpty unless -Recurse is given. A link is removed, never followed.</para>
/// </summary>
[Cmdlet(VerbsCommon.Remove, "SandboxItem", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(void))]
public sealed class RemoveSandboxItemCommand : SandboxItemCmdlet
{
    /// <summary>
    /// <para type="description">Absolute guest paths of the items to remove.</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 0)]
    [ValidateNotNullOrEmpty]
    public string[] Path { get; set; } = [];

    /// <summary>
    /// <para type="description">Remove directories with everything in them.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter Recurse { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord() => ForEachPath(Path, path =>
    {
        if (ShouldProcess(Describe(path), Recurse ? "Remove with content" : "Remove"))
        {
            Run(async (_, token) =>
            {
                await Engine.RemoveItemAsync(Name, path, Recurse, token).ConfigureAwait(false);
                return true;
            });
        }
    });
}
