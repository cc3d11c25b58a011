using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// Base of the cmdlets that act on paths in one sandbox: the sandbox by name, and a failure per
/// path written as a non-terminating error.
/// </summary>
public abstract class SandboxItemCmdlet : SandboxCmdlet
{
    /// <summary>
    /// <para type="description">The sandbox whose files to use. Binds from the Name property of piped sandbox objects.</para>
    /// </summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(SandboxNameCompleter))]
    public string Name { get; set; } = "";

    /// <summary>
    /// Runs <paramref name="action"/> for each path. A failure is written as an error for that
    /// path; one that concerns the sandbox itself (stopped, missing) ends the record's paths.
    /// </summary>
    protected void ForEachPath(IEnumerable<string> paths, Action<string> action)
    {
        ArgumentNullException.ThrowIfNull(paths);
        ArgumentNullException.ThrowIfNull(action);
        foreach (string path in paths)
        {
            try
            {
                action(path);
            }
            catch (SandboxException ex)
            {
                WriteSandboxError(ex);
                if (ex.ErrorId is "SandboxNotRunning" or "SandboxNotFound" or "SandboxFilesNotSupported"
                    or "RuntimeUnreachable")
                {
                    return;
                }
            }
        }
    }

    /// <summary>What ShouldProcess names: the path and the sandbox.</summary>
    protected string Describe(string path) => $"'{path}' in sandbox '{Name}'";
}
